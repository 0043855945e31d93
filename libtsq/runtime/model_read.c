/* tsq_plan_load: a plan straight from the bytes of a .tsq model file
 * (docs/format.md), without building a tsq_net, so that the inference-only
 * library (core, kernels, runtime) can run a model alone.
 *
 * The file is read into the runtime's stage description (runtime/desc.h)
 * and handed to the same builder as tsq_plan_create, so both plans of one
 * model compute the same bits. Every CRC, count, dimension and value is
 * checked before it is used, as the net loader does: memory allocated is
 * bounded by the file's size, and a corrupt file gets TSQ_ERR_FORMAT with
 * the section and field.
 *
 * This file parses the format a second time beside io/model_file.c: the
 * two should meet in one parser (io/ sits above runtime/ and may fill a
 * tsq__net_desc), which would also remove the local CRC-32 below. */
#include "kernels/kernels_internal.h"
#include "runtime/desc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TAG_NETW 0x5754454Eu /* "NETW" read as a little-endian u32 */
#define TAG_LAYR 0x5259414Cu /* "LAYR" */
#define MAX_SECTIONS 4096
#define MAX_TENSORS 8
#define MAX_OPTIONS 16
#define MAX_CONFIG 7
#define MAX_CHANNELS_AQ (INT64_C(1) << 24)
#define ENC_RAW 0
#define ENC_PACKED 1

typedef struct {
    const uint8_t *p;
    uint64_t n, pos;
    int bad;
} rd;

static const uint8_t *take(rd *r, uint64_t n)
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

static uint32_t get_u32(rd *r)
{
    const uint8_t *q = take(r, 4);
    return q ? (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) |
                   ((uint32_t)q[3] << 24)
             : 0;
}

static uint64_t get_u64(rd *r)
{
    uint64_t lo = get_u32(r);
    return lo | ((uint64_t)get_u32(r) << 32);
}

static uint8_t get_u8(rd *r)
{
    const uint8_t *q = take(r, 1);
    return q ? q[0] : 0;
}

static float get_f32(rd *r)
{
    uint32_t u = get_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double get_f64(rd *r)
{
    uint64_t u = get_u64(r);
    double f;
    memcpy(&f, &u, 8);
    return f;
}

/* zlib's CRC-32 (docs/format.md), bit by bit: the model is read once. */
static uint32_t crc32_of(const uint8_t *p, uint64_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    uint64_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

typedef struct {
    char name[256];
    int32_t dtype, encoding;
    int64_t numel;
    uint64_t nbytes;
    const uint8_t *data;
} tensor_rec;

typedef struct {
    tsq_context *ctx;
    int32_t section, layer;
    void **blocks;
    int64_t nblocks, cap;
    /* the sample shape after the layers so far */
    int32_t ndim;
    int64_t c, h, w;
} loader;

static tsq_status bad(loader *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static tsq_status bad(loader *L, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (L->layer >= 0)
        return tsq__fail(&L->ctx->obj, TSQ_ERR_FORMAT, "plan_load: section %d (layer %d): %s",
                         (int)L->section, (int)L->layer, what);
    return tsq__fail(&L->ctx->obj, TSQ_ERR_FORMAT, "plan_load: section %d: %s",
                     (int)L->section, what);
}

static void *keep(loader *L, size_t bytes)
{
    void *p;
    if (L->nblocks == L->cap) {
        int64_t cap = L->cap ? 2 * L->cap : 64;
        void **n = tsq__calloc(L->ctx, (size_t)cap, sizeof *n);
        if (!n)
            return NULL;
        if (L->blocks)
            memcpy(n, L->blocks, (size_t)L->nblocks * sizeof *n);
        tsq__free(L->ctx, L->blocks);
        L->blocks = n;
        L->cap = cap;
    }
    p = tsq__alloc(L->ctx, bytes ? bytes : 1);
    if (p)
        L->blocks[L->nblocks++] = p;
    return p;
}

static void release(loader *L)
{
    int64_t i;
    for (i = 0; i < L->nblocks; i++)
        tsq__free(L->ctx, L->blocks[i]);
    tsq__free(L->ctx, L->blocks);
}

static tsq_status oom(loader *L)
{
    return tsq__fail(&L->ctx->obj, TSQ_ERR_NO_MEMORY, "plan_load: out of memory");
}

/* Checks a section's frame and CRC; `payload` then reads its body. */
static tsq_status next_section(loader *L, rd *file, uint32_t *tag, rd *payload)
{
    uint64_t start = file->pos, len;
    *tag = get_u32(file);
    len = get_u64(file);
    if (file->bad || len > file->n - file->pos)
        return bad(L, "truncated section header or payload");
    payload->p = file->p + file->pos;
    payload->n = len;
    payload->pos = 0;
    payload->bad = 0;
    take(file, len);
    if (get_u32(file) != crc32_of(file->p + start, 12 + len) || file->bad)
        return bad(L, "checksum mismatch or truncated checksum (corrupt data)");
    return TSQ_OK;
}

static tsq_status read_tensor(loader *L, rd *r, tensor_rec *t)
{
    uint8_t len = get_u8(r);
    const uint8_t *name = take(r, len);
    int32_t d, ndim;
    if (r->bad)
        return bad(L, "truncated tensor record");
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->dtype = get_u8(r);
    t->encoding = get_u8(r);
    ndim = get_u8(r);
    if (r->bad || ndim < 1 || ndim > TSQ_MAX_DIMS)
        return bad(L, "tensor '%s' has a bad rank", t->name);
    t->numel = 1;
    for (d = 0; d < ndim; d++) {
        uint64_t s = get_u64(r);
        if (s < 1 || s > (UINT64_C(1) << 40) || !tsq__mul_i64(t->numel, (int64_t)s, &t->numel))
            return bad(L, "tensor '%s' dimension %d is %llu", t->name, (int)d,
                       (unsigned long long)s);
    }
    t->nbytes = get_u64(r);
    t->data = take(r, t->nbytes);
    if (r->bad)
        return bad(L, "tensor '%s' needs %llu bytes, the section has fewer", t->name,
                   (unsigned long long)t->nbytes);
    return TSQ_OK;
}

typedef struct {
    int32_t kind, nconfig, noptions, ntensors;
    int64_t config[MAX_CONFIG];
    int32_t okey[MAX_OPTIONS];
    double oval[MAX_OPTIONS];
    int64_t aq_channels;
    rd aq;
    tensor_rec t[MAX_TENSORS];
} layer_rec;

static const tensor_rec *find(const layer_rec *lr, const char *name)
{
    int32_t i;
    for (i = 0; i < lr->ntensors; i++)
        if (strcmp(lr->t[i].name, name) == 0)
            return &lr->t[i];
    return NULL;
}

static double option(const layer_rec *lr, int32_t key, double dflt)
{
    int32_t i;
    for (i = 0; i < lr->noptions; i++)
        if (lr->okey[i] == key)
            return lr->oval[i];
    return dflt;
}

static int32_t config_count(int32_t kind)
{
    switch (kind) {
    case TSQ_LAYER_DENSE: case TSQ_LAYER_MAXPOOL2D: return 2;
    case TSQ_LAYER_CONV2D: return 6;
    case TSQ_LAYER_BATCHNORM: return 1;
    case TSQ_LAYER_LOWBIT_DENSE: return 3;
    case TSQ_LAYER_LOWBIT_CONV2D: return 7;
    case TSQ_LAYER_RELU: case TSQ_LAYER_ACT_QUANT: case TSQ_LAYER_GLOBAL_AVGPOOL:
    case TSQ_LAYER_FLATTEN: return 0;
    default: return -1;
    }
}

static tsq_status read_layer(loader *L, rd *r, layer_rec *lr)
{
    int32_t i;
    tsq_status st;
    memset(lr, 0, sizeof *lr);
    lr->kind = (int32_t)get_u32(r);
    lr->nconfig = (int32_t)get_u32(r);
    if (r->bad || config_count(lr->kind) < 0)
        return bad(L, "unknown layer kind %d", (int)lr->kind);
    if (lr->nconfig != config_count(lr->kind))
        return bad(L, "%d config values, expected %d", (int)lr->nconfig,
                   (int)config_count(lr->kind));
    for (i = 0; i < lr->nconfig; i++) {
        uint64_t v = get_u64(r);
        if (v > (UINT64_C(1) << 30))
            return bad(L, "config value %d is %llu", (int)i, (unsigned long long)v);
        lr->config[i] = (int64_t)v;
    }
    lr->noptions = (int32_t)get_u32(r);
    if (r->bad || lr->noptions < 0 || lr->noptions > MAX_OPTIONS)
        return bad(L, "bad option count");
    for (i = 0; i < lr->noptions; i++) {
        lr->okey[i] = (int32_t)get_u32(r);
        lr->oval[i] = get_f64(r);
    }
    if (lr->kind == TSQ_LAYER_ACT_QUANT) {
        uint64_t nch = get_u64(r);
        if (r->bad || nch > (uint64_t)MAX_CHANNELS_AQ)
            return bad(L, "quantizer channel count %llu", (unsigned long long)nch);
        lr->aq_channels = (int64_t)nch;
        lr->aq.p = r->p + r->pos;
        lr->aq.n = (nch ? nch : 1) * 12;
        if (!take(r, lr->aq.n))
            return bad(L, "truncated quantizer parameters");
    }
    lr->ntensors = (int32_t)get_u32(r);
    if (r->bad || lr->ntensors < 0 || lr->ntensors > MAX_TENSORS)
        return bad(L, "bad tensor count");
    for (i = 0; i < lr->ntensors; i++)
        if ((st = read_tensor(L, r, &lr->t[i])) != TSQ_OK)
            return st;
    if (r->pos != r->n)
        return bad(L, "%llu unexpected bytes at the end", (unsigned long long)(r->n - r->pos));
    return TSQ_OK;
}

/* A raw f32 tensor of exactly n finite values, copied (the file's bytes
 * need not be aligned). */
static tsq_status floats(loader *L, const layer_rec *lr, const char *name, int64_t n,
                         const float **out)
{
    const tensor_rec *t = find(lr, name);
    float *x;
    rd r;
    int64_t i;
    if (!t || t->dtype != TSQ_DTYPE_F32 || t->encoding != ENC_RAW || t->numel != n ||
        t->nbytes != (uint64_t)n * 4)
        return bad(L, "tensor '%s' is missing or does not hold %lld floats", name, (long long)n);
    x = keep(L, (size_t)n * sizeof *x);
    if (!x)
        return oom(L);
    r.p = t->data;
    r.n = t->nbytes;
    r.pos = 0;
    r.bad = 0;
    for (i = 0; i < n; i++) {
        x[i] = get_f32(&r);
        if (!isfinite(x[i]))
            return bad(L, "tensor '%s' holds a non-finite value at %lld", name, (long long)i);
    }
    *out = x;
    return TSQ_OK;
}

/* Packed weight codes: v + m in `bits` bits, least significant first. */
static tsq_status codes(loader *L, const layer_rec *lr, int64_t n, int32_t bits,
                        const int8_t **out)
{
    const tensor_rec *t = find(lr, "weight_codes");
    int32_t m = (1 << (bits - 1)) - 1;
    uint32_t mask = (1u << bits) - 1, acc = 0;
    int fill = 0;
    const uint8_t *src;
    int8_t *w;
    int64_t i;
    if (!t || t->encoding != ENC_PACKED || t->numel != n ||
        t->nbytes != ((uint64_t)n * (uint64_t)bits + 7) / 8)
        return bad(L, "weight codes do not match %lld %d-bit weights", (long long)n, (int)bits);
    w = keep(L, (size_t)n);
    if (!w)
        return oom(L);
    src = t->data;
    for (i = 0; i < n; i++) {
        int32_t v;
        while (fill < bits) {
            acc |= (uint32_t)(*src++) << fill;
            fill += 8;
        }
        v = (int32_t)(acc & mask) - m;
        acc >>= bits;
        fill -= bits;
        if (v > m)
            return bad(L, "a weight code is outside its %d-bit alphabet", (int)bits);
        w[i] = (int8_t)v;
    }
    *out = w;
    return TSQ_OK;
}

static void set_in(loader *L, tsq__stage_desc *d)
{
    d->in_c = L->c;
    d->in_h = L->h;
    d->in_w = L->w;
}

static void set_out(loader *L, tsq__stage_desc *d, int32_t ndim, int64_t c, int64_t h, int64_t w)
{
    L->ndim = ndim;
    d->out_c = L->c = c;
    d->out_h = L->h = h;
    d->out_w = L->w = w;
}

static tsq_status describe_quant(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    int64_t n = lr->aq_channels ? lr->aq_channels : 1, c;
    int32_t *bits = keep(L, (size_t)n * sizeof *bits);
    float *eps = keep(L, (size_t)n * sizeof *eps), *delta = keep(L, (size_t)n * sizeof *delta);
    rd r = lr->aq;
    if (!bits || !eps || !delta)
        return oom(L);
    if (lr->aq_channels && lr->aq_channels != L->c)
        return bad(L, "quantizer of %lld channels on %lld", (long long)n, (long long)L->c);
    for (c = 0; c < n; c++) {
        bits[c] = (int32_t)get_u32(&r);
        eps[c] = get_f32(&r);
        delta[c] = get_f32(&r);
        if (bits[c] < 1 || bits[c] > 8 || !isfinite(eps[c]) || !(delta[c] > 0.0f) ||
            !isfinite(delta[c]))
            return bad(L, "quantizer channel %lld: bits %d, eps %g, delta %g", (long long)c,
                       (int)bits[c], eps[c], delta[c]);
    }
    d->kind = TSQ__STAGE_QUANT;
    d->nq = n;
    d->bits = bits;
    d->eps = eps;
    d->delta = delta;
    d->codes_out = option(lr, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 0.0) != 0.0;
    set_out(L, d, L->ndim, L->c, L->h, L->w);
    return TSQ_OK;
}

static tsq_status describe_affine(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    const float *g, *b, *m, *v;
    float *s, *t;
    double eps = option(lr, TSQ_LAYER_OPT_BN_EPS, 1e-5);
    int64_t n = lr->config[0], c;
    tsq_status st;
    if (n != L->c)
        return bad(L, "batch-norm of %lld channels on %lld", (long long)n, (long long)L->c);
    if ((st = floats(L, lr, "gamma", n, &g)) != TSQ_OK ||
        (st = floats(L, lr, "beta", n, &b)) != TSQ_OK ||
        (st = floats(L, lr, "running_mean", n, &m)) != TSQ_OK ||
        (st = floats(L, lr, "running_var", n, &v)) != TSQ_OK)
        return st;
    if (!(eps > 0.0) || !isfinite(eps))
        return bad(L, "batch-norm eps %g", eps);
    s = keep(L, (size_t)n * sizeof *s);
    t = keep(L, (size_t)n * sizeof *t);
    if (!s || !t)
        return oom(L);
    for (c = 0; c < n; c++) { /* the layer's eval affine, operation for operation */
        double sc;
        if (!(v[c] >= 0.0f))
            return bad(L, "running_var[%lld] is %g, below 0", (long long)c, v[c]);
        sc = (double)g[c] / sqrt((double)v[c] + eps);
        s[c] = (float)sc;
        t[c] = (float)((double)b[c] - sc * (double)m[c]);
    }
    d->kind = TSQ__STAGE_AFFINE;
    d->scale = s;
    d->shift = t;
    set_out(L, d, L->ndim, L->c, L->h, L->w);
    return TSQ_OK;
}

/* Float or low-bit conv / dense: the geometry, then the tensors. */
static tsq_status describe_product(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    int conv = lr->kind == TSQ_LAYER_CONV2D || lr->kind == TSQ_LAYER_LOWBIT_CONV2D;
    int lowbit = lr->kind == TSQ_LAYER_LOWBIT_CONV2D || lr->kind == TSQ_LAYER_LOWBIT_DENSE;
    int64_t in = lr->config[0], out = lr->config[1], k = in;
    tsq_status st;
    if (out < 1 || in < 1)
        return bad(L, "%lld -> %lld channels", (long long)in, (long long)out);
    if (conv) {
        if (L->ndim != 3 || L->c != in)
            return bad(L, "a convolution of %lld channels on a (%lld,%lld,%lld) sample",
                       (long long)in, (long long)L->c, (long long)L->h, (long long)L->w);
        st = tsq__conv_geom_check(&L->ctx->obj, "plan_load", in, L->h, L->w, lr->config[2],
                                  lr->config[3], lr->config[4], lr->config[4], lr->config[5],
                                  lr->config[5], &d->geom);
        if (st != TSQ_OK)
            return bad(L, "%s", tsq_context_errmsg(L->ctx));
        if (lr->config[2] > 1024 || lr->config[3] > 1024 || lr->config[4] > 1024 ||
            d->geom.k > (INT64_C(1) << 30))
            return bad(L, "convolution kernel or stride too large");
        tsq__conv_geom_init(&d->geom, in, L->h, L->w, out, lr->config[2], lr->config[3],
                            lr->config[4], lr->config[5]);
        k = d->geom.k;
    } else if (L->ndim != 1 || L->c != in) {
        return bad(L, "a dense layer of %lld inputs on a sample of %lld x %lld x %lld",
                   (long long)in, (long long)L->c, (long long)L->h, (long long)L->w);
    }
    if (k * out > (INT64_C(1) << 40))
        return bad(L, "weights too large");
    d->conv = conv;
    if (lowbit) {
        int32_t bits = (int32_t)lr->config[conv ? 6 : 2];
        const float *alpha;
        float *a;
        int64_t o;
        if (bits < 2 || bits > 8)
            return bad(L, "weight bits %d", (int)bits);
        if ((st = codes(L, lr, k * out, bits, &d->wcodes)) != TSQ_OK ||
            (st = floats(L, lr, "alpha", out, &alpha)) != TSQ_OK ||
            (st = floats(L, lr, "bias", out, &d->bias)) != TSQ_OK)
            return st;
        a = (float *)(uintptr_t)alpha; /* our own copy: clamp as the layer does */
        for (o = 0; o < out; o++)
            a[o] = a[o] >= TSQ__LOWBIT_ALPHA_MIN ? a[o] : TSQ__LOWBIT_ALPHA_MIN;
        d->kind = TSQ__STAGE_LOWBIT;
        d->weight_bits = bits;
        d->alpha = a;
    } else {
        if ((st = floats(L, lr, "weight", k * out, &d->weight)) != TSQ_OK ||
            (st = floats(L, lr, "bias", out, &d->bias)) != TSQ_OK)
            return st;
        d->kind = conv ? TSQ__STAGE_CONV : TSQ__STAGE_DENSE;
    }
    if (conv)
        set_out(L, d, 3, out, d->geom.oh, d->geom.ow);
    else
        set_out(L, d, 1, out, 1, 1);
    return TSQ_OK;
}

/* The kind names of nn.h, for messages (this library has no layers). */
static const char *kind_name(int32_t kind)
{
    static const char *const names[] = {"?",       "dense",      "conv2d",  "batchnorm",
                                        "relu",    "act_quant",  "maxpool2d",
                                        "global_avgpool", "flatten", "lowbit_dense",
                                        "lowbit_conv2d"};
    return kind >= 1 && kind <= 10 ? names[kind] : names[0];
}

static tsq_status describe(loader *L, const layer_rec *lr, tsq__stage_desc *d)
{
    d->layer = L->layer;
    d->name = kind_name(lr->kind);
    set_in(L, d);
    switch (lr->kind) {
    case TSQ_LAYER_ACT_QUANT: return describe_quant(L, lr, d);
    case TSQ_LAYER_BATCHNORM: return describe_affine(L, lr, d);
    case TSQ_LAYER_RELU:
        d->kind = TSQ__STAGE_RELU;
        set_out(L, d, L->ndim, L->c, L->h, L->w);
        return TSQ_OK;
    case TSQ_LAYER_FLATTEN:
        d->kind = TSQ__STAGE_FLATTEN;
        set_out(L, d, 1, L->c * L->h * L->w, 1, 1);
        return TSQ_OK;
    case TSQ_LAYER_MAXPOOL2D: {
        int64_t k = lr->config[0], s = lr->config[1];
        if (L->ndim != 3 || k < 1 || s < 1 || k > L->h || k > L->w)
            return bad(L, "a %lld x %lld max-pool on a (%lld,%lld,%lld) sample", (long long)k,
                       (long long)k, (long long)L->c, (long long)L->h, (long long)L->w);
        d->kind = TSQ__STAGE_MAXPOOL;
        d->k = k;
        d->stride = s;
        set_out(L, d, 3, L->c, (L->h - k) / s + 1, (L->w - k) / s + 1);
        return TSQ_OK;
    }
    case TSQ_LAYER_GLOBAL_AVGPOOL:
        d->kind = 0; /* the builder refuses it with the layer's name */
        set_out(L, d, 1, L->c, 1, 1);
        return TSQ_OK;
    default: return describe_product(L, lr, d);
    }
}

static tsq_status read_header(loader *L, rd *file, tsq__net_desc *d, uint32_t *nlayers)
{
    rd pay;
    uint32_t version, nsections, tag, i;
    tsq_status st;
    if (file->n < 16 || memcmp(file->p, "TSQM", 4) != 0)
        return tsq__fail(&L->ctx->obj, TSQ_ERR_FORMAT, "plan_load: not a .tsq model (bad magic)");
    take(file, 4);
    version = get_u32(file);
    nsections = get_u32(file);
    if (get_u32(file) != crc32_of(file->p, 12))
        return tsq__fail(&L->ctx->obj, TSQ_ERR_FORMAT, "plan_load: header checksum mismatch");
    if (version > TSQ_MODEL_FORMAT_VERSION)
        return tsq__fail(&L->ctx->obj, TSQ_ERR_VERSION, "plan_load: format version %u, this "
                         "library reads up to %d", version, TSQ_MODEL_FORMAT_VERSION);
    if (version == 0 || nsections < 1 || nsections > MAX_SECTIONS)
        return tsq__fail(&L->ctx->obj, TSQ_ERR_FORMAT, "plan_load: version %u, %u sections",
                         version, nsections);
    if ((st = next_section(L, file, &tag, &pay)) != TSQ_OK)
        return st;
    if (tag != TAG_NETW)
        return bad(L, "the first section is not NETW");
    d->in_ndim = (int32_t)get_u32(&pay);
    for (i = 0; i < 3; i++) {
        uint64_t s = get_u64(&pay);
        if (s > (UINT64_C(1) << 24) || ((int32_t)i < d->in_ndim && s < 1))
            return bad(L, "input dimension %u is %llu", i, (unsigned long long)s);
        d->in_shape[i] = (int64_t)s;
    }
    *nlayers = get_u32(&pay);
    if (pay.bad || pay.pos != pay.n || d->in_ndim < 1 || d->in_ndim > 3)
        return bad(L, "malformed network header");
    if (*nlayers + 1 != nsections)
        return bad(L, "%u layers in %u sections", *nlayers, nsections);
    L->ndim = d->in_ndim;
    L->c = d->in_shape[0];
    L->h = d->in_ndim == 3 ? d->in_shape[1] : 1;
    L->w = d->in_ndim == 3 ? d->in_shape[2] : 1;
    if (d->in_ndim == 2)
        return bad(L, "input samples must be (C,H,W) or (F)");
    return TSQ_OK;
}

static tsq_status read_model(loader *L, rd *file, tsq__net_desc *d)
{
    uint32_t nlayers = 0, i;
    layer_rec *lr;
    tsq_status st = read_header(L, file, d, &nlayers);
    if (st != TSQ_OK)
        return st;
    lr = keep(L, sizeof *lr);
    d->stages = keep(L, (size_t)(nlayers ? nlayers : 1) * sizeof *d->stages);
    if (!lr || !d->stages)
        return oom(L);
    memset(d->stages, 0, (size_t)(nlayers ? nlayers : 1) * sizeof *d->stages);
    d->nstages = (int32_t)nlayers;
    for (i = 0; i < nlayers && st == TSQ_OK; i++) {
        uint32_t tag;
        rd pay;
        L->section = (int32_t)i + 1;
        L->layer = (int32_t)i;
        st = next_section(L, file, &tag, &pay);
        if (st == TSQ_OK && tag != TAG_LAYR)
            st = bad(L, "expected a LAYR section");
        if (st == TSQ_OK)
            st = read_layer(L, &pay, lr);
        if (st == TSQ_OK)
            st = describe(L, lr, &d->stages[i]);
    }
    if (st == TSQ_OK && file->pos != file->n) {
        L->layer = -1;
        st = bad(L, "%llu bytes after the last section", (unsigned long long)(file->n - file->pos));
    }
    return st;
}

tsq_status tsq_plan_load(tsq_context *ctx, const void *buf, uint64_t size, tsq_plan **out)
{
    loader L;
    tsq__net_desc d;
    rd file;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!buf || !out)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "plan_load: %s is NULL", !buf ? "buf" : "out");
    *out = NULL;
    memset(&L, 0, sizeof L);
    memset(&d, 0, sizeof d);
    L.ctx = ctx;
    L.layer = -1;
    file.p = buf;
    file.n = size;
    file.pos = 0;
    file.bad = 0;
    st = read_model(&L, &file, &d);
    if (st == TSQ_OK && d.nstages < 1)
        st = tsq__fail(&ctx->obj, TSQ_ERR_STATE, "plan_create: the net has no layers");
    if (st == TSQ_OK)
        st = tsq__plan_from_desc(ctx, &d, out);
    release(&L);
    return st;
}
