/* libFuzzer target: the option setters, getters and bounds of every handle
 * type, and the other small "set, then read back" calls.
 *
 * Handles (made afresh for each input from one capped context): the
 * context; a per-tensor and a per-channel quantizer; a regressor; a net
 * (its network-level TSQ options), the net's own regressor and each of the
 * net's layers; one stand-alone layer of every kind; an inference plan made
 * from the net; an f32, a u8 and an i8 tensor.
 *
 * The input is a sequence of 14-byte operations:
 *    byte 0    handle (modulo the number of handles)
 *    byte 1    bits 0-1 action: 0 set, 1 get, 2 bounds, 3 the handle's
 *              special call (below); bits 2-3 how the value is made: 0 the
 *              8 value bytes as a double, 1 a small integer, 2 an entry of
 *              a table of edge values (NaN, infinities, denormals, DBL_MAX,
 *              FLT_MAX and its neighbours, -0, bounds of the options),
 *              3 a multiple of 1/8; bit 4: 0 a small key (-2..13 around
 *              the handle's key family base, key_base()), 1 the 4 key
 *              bytes as an int32
 *    bytes 2-5 key, bytes 6-13 value (little-endian)
 *
 * Promises checked after each operation (abort() on a broken one):
 *  - a set that returns TSQ_OK: get returns the value just set, and the
 *    key's bounds contain it (so NaN is never accepted);
 *  - a set that fails: a documented status, a message, and a snapshot of
 *    every readable value of the handle (all small keys, quantizer
 *    channels, alphabet, tensor bytes) identical before and after, bit for
 *    bit ("failed calls leave state untouched");
 *  - get and bounds agree on which keys exist; bounds give lo <= hi; two
 *    gets in a row agree;
 *  - special calls: tsq_context_set_seed / get_seed and tsq_context_info;
 *    tsq_quantizer_set_channel / get_channel; tsq_regressor_set_alphabet /
 *    get_alphabet (sorted, duplicates merged, WEIGHT_BITS then reads 0);
 *    tsq_layer_act_quant_set_channel / get_channel; tsq_layer_info;
 *    tsq_plan_get; tsq_tensor_fill (every element equals the value);
 *    each with the same success / failure rules as a set;
 *  - after every operation the errmsg of every handle is a NUL-terminated
 *    string; at the end every block of the context is freed. */
#include "fuzz_common.h"

#include <float.h>

#define OP_BYTES 14
#define MAX_OPS 64 /* longer inputs are cut: many short runs find more */
#define SNAP_KEYS 16 /* keys base - 2 .. base + 13 */

enum { K_CONTEXT, K_QUANTIZER, K_REGRESSOR, K_NET, K_LAYER, K_PLAN, K_TENSOR };

typedef struct handle {
    int kind;
    void *h;
    const char *name;
} handle;

#define NSOLO 10
#define NNET 8
#define MAX_HANDLES (8 + NSOLO + NNET + 3)

typedef struct world {
    fz_heap heap;
    tsq_context *ctx;
    tsq_net *net;
    handle hs[MAX_HANDLES];
    int n;
} world;

/* The base of a handle's option-key family (core.h: first key = base + 1),
 * so that small keys land on the keys that exist; special calls on the
 * context read its info keys, on a layer its info keys. */
static int32_t key_base(const handle *h, int special)
{
    switch (h->kind) {
    case K_CONTEXT: return special ? 0x0A00 : 0x0100;
    case K_QUANTIZER: return 0x0200;
    case K_REGRESSOR: return 0x0300;
    case K_LAYER: return special ? 0x0500 : 0x0400;
    case K_NET: return 0x0600;
    case K_PLAN: return 0x0700;
    default: return 0;
    }
}

/* ---- uniform access to the option families (one spelling, doubles) -------- */

static tsq_status opt_set(const handle *h, int32_t key, double v)
{
    switch (h->kind) {
    case K_CONTEXT: return tsq_context_set_option(h->h, key, v);
    case K_QUANTIZER: return tsq_quantizer_set_option(h->h, key, v);
    case K_REGRESSOR: return tsq_regressor_set_option(h->h, key, v);
    case K_NET: return tsq_net_set_conversion_option(h->h, key, v);
    case K_LAYER: return tsq_layer_set_option(h->h, key, v);
    default: return TSQ_ERR_INTERNAL;
    }
}

static tsq_status opt_get(const handle *h, int32_t key, double *v)
{
    switch (h->kind) {
    case K_CONTEXT: return tsq_context_get_option(h->h, key, v);
    case K_QUANTIZER: return tsq_quantizer_get_option(h->h, key, v);
    case K_REGRESSOR: return tsq_regressor_get_option(h->h, key, v);
    case K_NET: return tsq_net_get_conversion_option(h->h, key, v);
    case K_LAYER: return tsq_layer_get_option(h->h, key, v);
    default: return TSQ_ERR_INTERNAL;
    }
}

static tsq_status opt_bounds(const handle *h, int32_t key, double *lo, double *hi)
{
    switch (h->kind) {
    case K_CONTEXT: return tsq_context_option_bounds(key, lo, hi);
    case K_QUANTIZER: return tsq_quantizer_option_bounds(key, lo, hi);
    case K_REGRESSOR: return tsq_regressor_option_bounds(key, lo, hi);
    case K_NET: return tsq_net_conversion_option_bounds(key, lo, hi);
    case K_LAYER: return tsq_layer_option_bounds(key, lo, hi);
    default: return TSQ_ERR_INTERNAL;
    }
}

static const char *errmsg(const handle *h)
{
    switch (h->kind) {
    case K_CONTEXT: return tsq_context_errmsg(h->h);
    case K_QUANTIZER: return tsq_quantizer_errmsg(h->h);
    case K_REGRESSOR: return tsq_regressor_errmsg(h->h);
    case K_NET: return tsq_net_errmsg(h->h);
    case K_LAYER: return tsq_layer_errmsg(h->h);
    case K_TENSOR: return tsq_tensor_errmsg(h->h);
    default: return ""; /* a plan records no message */
    }
}

/* ---- snapshots: everything a handle lets one read -------------------------- */

typedef struct snapshot {
    tsq_status st[SNAP_KEYS + 1];
    double v[SNAP_KEYS + 1];
    int64_t iv[SNAP_KEYS + 1];
    /* quantizer / act_quant channels, regressor alphabet */
    tsq_status cst[12];
    int64_t cn[12];
    int32_t cbits[12];
    float ceps[12], cdelta[12];
    int32_t alphabet[256], alen;
    uint8_t bytes[64];
} snapshot;

static void snap(const handle *h, int32_t extra_key, snapshot *s)
{
    int32_t i;
    memset(s, 0, sizeof *s);
    for (i = 0; i <= SNAP_KEYS; i++) {
        int32_t key = i < SNAP_KEYS ? key_base(h, 0) + i - 2 : extra_key;
        switch (h->kind) {
        case K_PLAN: s->st[i] = tsq_plan_get(h->h, key, &s->iv[i]); break;
        case K_TENSOR: break;
        default:
            s->st[i] = opt_get(h, key, &s->v[i]);
            if (h->kind == K_LAYER)
                s->cst[0] |= tsq_layer_info(h->h, key, &s->iv[i]) << 8;
        }
    }
    if (h->kind == K_CONTEXT) {
        uint64_t seed = 0;
        tsq_context_get_seed(h->h, &seed);
        s->iv[0] ^= (int64_t)seed;
    } else if (h->kind == K_QUANTIZER) {
        for (i = 0; i < 12; i++)
            s->cst[i] = tsq_quantizer_get_channel(h->h, i - 1, &s->ceps[i], &s->cdelta[i]);
    } else if (h->kind == K_REGRESSOR) {
        s->cst[0] = tsq_regressor_get_alphabet(h->h, s->alphabet, 256, &s->alen);
    } else if (h->kind == K_LAYER) {
        for (i = 0; i < 12; i++)
            s->cst[i] |= tsq_layer_act_quant_get_channel(h->h, i - 2, &s->cn[i], &s->cbits[i],
                                                         &s->ceps[i], &s->cdelta[i]);
    } else if (h->kind == K_TENSOR) {
        uint64_t nb = 0;
        tsq_tensor_nbytes(h->h, &nb);
        FZ_REQUIRE(nb <= sizeof s->bytes, "tensor too big");
        tsq_tensor_copy_out(h->h, s->bytes, sizeof s->bytes);
    }
}

static void require_unchanged(const handle *h, int32_t key, const snapshot *before,
                              const char *call)
{
    snapshot after;
    snap(h, key, &after);
    FZ_REQUIRE(memcmp(before, &after, sizeof after) == 0,
               "%s on %s (key %d) failed but changed the handle", call, h->name, (int)key);
}

/* The statuses a failing call on this handle kind may return. */
static int documented_failure(const handle *h, tsq_status st)
{
    switch (h->kind) {
    case K_CONTEXT: return st == TSQ_ERR_INVALID;
    case K_QUANTIZER:
    case K_REGRESSOR:
    case K_NET: return st == TSQ_ERR_INVALID || st == TSQ_ERR_STATE;
    case K_LAYER: return st == TSQ_ERR_INVALID;
    default: return 0;
    }
}

/* ---- decoding ---------------------------------------------------------------- */

static const double edge_values[] = {
    NAN, -NAN, INFINITY, -INFINITY, 0.0, -0.0, DBL_MIN, -DBL_MIN, 4.9406564584124654e-324,
    DBL_MAX, -DBL_MAX, FLT_MAX, -FLT_MAX, 3.4028235677973366e38 /* above FLT_MAX */,
    1.1754943508222875e-38 /* FLT_MIN */, 1.401298464324817e-45 /* FLT_TRUE_MIN */,
    1e-12, 9.999999999999999e-13, 1e-5, 0.1, 0.32, 0.5, 0.63, 0.9999999999999999, 1.0,
    1.0000000000000002, 1.5, 2.0, 7.0, 8.0, 9.0, 10.0, 11.0, 255.0, 256.0, 1000.0, 1001.0,
    1e12, 1.0000000000000002e12, 100000.0, 100001.0, 1048576.0, 1048577.0, 1e30, 1e31,
    9007199254740992.0, 9.2233720368547758e18, -1.0, -0.5, -2.0, 2147483647.0, 2147483648.0,
    -2147483649.0, 16.0, 15.0, 1023.0, 1024.0,
};

static double decode_value(uint8_t mode, const uint8_t *v)
{
    double d;
    switch (mode) {
    case 0: memcpy(&d, v, 8); return d;
    case 1: return (double)(int8_t)v[0];
    case 2: return edge_values[v[0] % (sizeof edge_values / sizeof edge_values[0])];
    default: return (double)(int16_t)(v[0] | v[1] << 8) / 8.0;
    }
}

/* ---- the operations ---------------------------------------------------------- */

static void do_set(const handle *h, int32_t key, uint8_t vmode, const uint8_t *vb)
{
    snapshot before;
    tsq_status st, bst;
    double v = decode_value(vmode, vb), got = 0, lo = 0, hi = 0;
    snap(h, key, &before);
    if (h->kind == K_PLAN) {
        int64_t a = 0, b = 0;
        st = tsq_plan_get(h->h, key, &a);
        FZ_REQUIRE(st == (key >= TSQ_PLAN_LOWBIT_LAYERS && key <= TSQ_PLAN_STAGES ? TSQ_OK
                                                                              : TSQ_ERR_INVALID),
                   "plan_get %d",
                   (int)key);
        FZ_REQUIRE(tsq_plan_get(h->h, key, &b) == st && a == b, "plan_get not repeatable");
        return;
    } else if (h->kind == K_TENSOR) {
        int32_t dtype = 0;
        int64_t n = 0, i;
        void *p = NULL;
        st = tsq_tensor_fill(h->h, v);
        tsq_tensor_dtype(h->h, &dtype);
        if (st == TSQ_OK) {
            tsq_tensor_numel(h->h, &n);
            tsq_tensor_data(h->h, &p);
            for (i = 0; i < n; i++) {
                if (dtype == TSQ_DTYPE_F32)
                    FZ_REQUIRE(fz_same_float(((float *)p)[i], (float)v) && isfinite(((float *)p)[i]),
                               "fill %g gives %g", v, ((float *)p)[i]);
                else if (dtype == TSQ_DTYPE_U8)
                    FZ_REQUIRE(((uint8_t *)p)[i] == v, "u8 fill %g", v);
                else
                    FZ_REQUIRE(((int8_t *)p)[i] == v, "i8 fill %g", v);
            }
            return;
        }
        FZ_REQUIRE(st == TSQ_ERR_INVALID || st == TSQ_ERR_NOT_FINITE, "tensor_fill: %s",
                   tsq_status_string(st));
        fz_check_msg(errmsg(h), 1, "tensor_fill");
        require_unchanged(h, key, &before, "tensor_fill");
        return;
    } else {
        st = opt_set(h, key, v);
        bst = opt_bounds(h, key, &lo, &hi);
        if (st == TSQ_OK) {
            tsq_status gst = opt_get(h, key, &got);
            FZ_REQUIRE(gst == TSQ_OK && got == v, "%s: key %d set to %.17g reads %.17g (%s)",
                       h->name, (int)key, v, got, tsq_status_string(gst));
            FZ_REQUIRE(bst == TSQ_OK && lo <= v && v <= hi,
                       "%s: key %d accepted %.17g outside [%.17g, %.17g] (%s)", h->name,
                       (int)key, v, lo, hi, tsq_status_string(bst));
            if (h->kind != K_NET && h->kind != K_LAYER)
                FZ_REQUIRE(errmsg(h)[0] == '\0', "%s: a message after a successful set",
                           h->name);
            return;
        }
    }
    FZ_REQUIRE(documented_failure(h, st), "%s: set key %d = %.17g: undocumented %s", h->name,
               (int)key, v, tsq_status_string(st));
    fz_check_msg(errmsg(h), 1, h->name);
    require_unchanged(h, key, &before, "set");
}

static void do_get(const handle *h, int32_t key)
{
    if (h->kind == K_PLAN || h->kind == K_TENSOR) {
        int64_t a = 0;
        if (h->kind == K_PLAN)
            (void)tsq_plan_get(h->h, key, &a);
        else
            (void)tsq_tensor_dim(h->h, key, &a);
    } else {
        double a = 0, b = 0, lo = 0, hi = 0;
        tsq_status s1 = opt_get(h, key, &a), s2 = opt_get(h, key, &b);
        tsq_status sb = opt_bounds(h, key, &lo, &hi);
        FZ_REQUIRE(s1 == s2 && fz_same_double(a, b), "%s: get %d not repeatable", h->name,
                   (int)key);
        if (s1 == TSQ_OK) {
            FZ_REQUIRE(sb == TSQ_OK, "%s: key %d reads but has no bounds", h->name, (int)key);
            /* documented exception: WEIGHT_BITS reads 0 under a custom alphabet */
            FZ_REQUIRE((a >= lo && a <= hi) ||
                           (h->kind == K_REGRESSOR && key == TSQ_REGRESSOR_WEIGHT_BITS && a == 0),
                       "%s: key %d = %.17g outside [%.17g, %.17g]", h->name, (int)key, a, lo, hi);
        }
        if (h->kind != K_LAYER) /* a layer kind may lack an option that has bounds */
            FZ_REQUIRE((s1 == TSQ_OK) == (sb == TSQ_OK), "%s: key %d: get %s, bounds %s",
                       h->name, (int)key, tsq_status_string(s1), tsq_status_string(sb));
    }
}

static void do_bounds(const handle *h, int32_t key)
{
    tsq_status st;
    if (h->kind != K_PLAN && h->kind != K_TENSOR) {
        double lo = NAN, hi = NAN;
        st = opt_bounds(h, key, &lo, &hi);
        FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_INVALID, "bounds %d: %s", (int)key,
                   tsq_status_string(st));
        if (st == TSQ_OK)
            FZ_REQUIRE(lo <= hi, "%s: bounds of %d: [%g, %g]", h->name, (int)key, lo, hi);
        FZ_REQUIRE(opt_bounds(h, key, &lo, NULL) == TSQ_ERR_NULL, "NULL hi");
    }
}

static float f32_of(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

static void do_special(world *w, const handle *h, int32_t key, uint8_t vmode, const uint8_t *vb)
{
    snapshot before;
    tsq_status st;
    snap(h, key, &before);
    if (h->kind == K_CONTEXT) {
        uint64_t seed = 0, got = 1;
        const char *info = NULL;
        memcpy(&seed, vb, 8);
        FZ_REQUIRE(tsq_context_set_seed(h->h, seed) == TSQ_OK, "set_seed");
        FZ_REQUIRE(tsq_context_get_seed(h->h, &got) == TSQ_OK && got == seed, "get_seed");
        st = tsq_context_info(h->h, key, &info);
        FZ_REQUIRE(st == (key >= TSQ_INFO_VERSION && key <= TSQ_INFO_SUMMARY ? TSQ_OK
                                                                              : TSQ_ERR_INVALID),
                   "context_info 0x%04x", (unsigned)key);
        if (st == TSQ_OK)
            fz_check_msg(info, 1, "context_info");
        return;
    }
    if (h->kind == K_QUANTIZER) {
        int64_t c = (int64_t)(int8_t)(key & 0xff);
        float eps = f32_of(vb), delta = f32_of(vb + 4), e2 = -1, d2 = -1;
        if (vmode != 0) { /* friendlier values: small multiples */
            eps = (float)(int8_t)vb[0] / 16.0f;
            delta = (float)(int8_t)vb[4] / 16.0f;
        }
        st = tsq_quantizer_set_channel(h->h, c, eps, delta);
        if (st == TSQ_OK) {
            FZ_REQUIRE(tsq_quantizer_get_channel(h->h, c, &e2, &d2) == TSQ_OK &&
                           fz_same_float(e2, eps) && fz_same_float(d2, delta),
                       "quantizer channel %lld set (%g, %g) reads (%g, %g)", (long long)c, eps,
                       delta, e2, d2);
            FZ_REQUIRE(isfinite(eps) && eps >= 0 && isfinite(delta) && delta > 0,
                       "quantizer_set_channel accepted eps %g delta %g", eps, delta);
            return;
        }
        FZ_REQUIRE(st == TSQ_ERR_INVALID || st == TSQ_ERR_NOT_FINITE, "set_channel: %s",
                   tsq_status_string(st));
    } else if (h->kind == K_REGRESSOR) {
        int32_t values[8], count = (int32_t)((uint32_t)key % 9), i, got[256], n = 0;
        double wb = -1;
        for (i = 0; i < 8; i++)
            values[i] = (int32_t)(int8_t)vb[i];
        if (vmode == 1) /* some values outside -128..127 */
            values[0] = (int32_t)key;
        st = tsq_regressor_set_alphabet(h->h, values, count);
        if (st == TSQ_OK) {
            FZ_REQUIRE(tsq_regressor_get_alphabet(h->h, got, 256, &n) == TSQ_OK && n >= 2 &&
                           n <= count, "alphabet of %d values reads %d", (int)count, (int)n);
            for (i = 0; i < n; i++) {
                int32_t j, found = 0;
                FZ_REQUIRE(i == 0 || got[i - 1] < got[i], "alphabet not strictly ascending");
                for (j = 0; j < count; j++)
                    found |= values[j] == got[i];
                FZ_REQUIRE(found, "alphabet value %d was not given", (int)got[i]);
            }
            for (i = 0; i < count; i++) {
                int32_t j, found = 0;
                for (j = 0; j < n; j++)
                    found |= values[i] == got[j];
                FZ_REQUIRE(found, "alphabet lost value %d", (int)values[i]);
            }
            FZ_REQUIRE(tsq_regressor_get_option(h->h, TSQ_REGRESSOR_WEIGHT_BITS, &wb) == TSQ_OK &&
                           wb == 0, "weight bits %g with a custom alphabet", wb);
            return;
        }
        FZ_REQUIRE(st == TSQ_ERR_INVALID || st == TSQ_ERR_STATE, "set_alphabet: %s",
                   tsq_status_string(st));
    } else if (h->kind == K_LAYER) {
        int32_t kind = 0;
        tsq_layer_kind(h->h, &kind);
        if (kind == TSQ_LAYER_ACT_QUANT) {
            int64_t channel = (int64_t)(int8_t)((uint32_t)key >> 8 & 0xff);
            int64_t nch = (int64_t)((uint32_t)key >> 16 & 0xff), n2 = -1;
            int32_t bits = (int32_t)(int8_t)(key & 0xff), b2 = -1;
            float eps = f32_of(vb), delta = f32_of(vb + 4), e2 = -1, d2 = -1;
            if (vmode != 0) {
                eps = (float)(int8_t)vb[0] / 16.0f;
                delta = (float)(int8_t)vb[4] / 16.0f;
                bits = (int32_t)(key & 7) + 1;
                channel = channel % 5;
                nch = nch % 5;
            }
            st = tsq_layer_act_quant_set_channel(h->h, channel, nch, bits, eps, delta);
            if (st == TSQ_OK) {
                FZ_REQUIRE(tsq_layer_act_quant_get_channel(h->h, channel, &n2, &b2, &e2, &d2) ==
                               TSQ_OK && b2 == bits && fz_same_float(e2, eps) &&
                               fz_same_float(d2, delta) && n2 == (channel == -1 ? 0 : nch),
                           "act_quant channel %lld/%lld set (%d, %g, %g) reads %lld (%d, %g, %g)",
                           (long long)channel, (long long)nch, (int)bits, eps, delta,
                           (long long)n2, (int)b2, e2, d2);
                FZ_REQUIRE(bits >= 1 && bits <= 8 && isfinite(eps) && eps >= 0 &&
                               isfinite(delta) && delta > 0,
                           "act_quant_set_channel accepted bits %d eps %g delta %g", (int)bits,
                           eps, delta);
                return;
            }
            FZ_REQUIRE(st == TSQ_ERR_INVALID || st == TSQ_ERR_NOT_FINITE, "act_quant: %s",
                       tsq_status_string(st));
        } else {
            int64_t a = 0, b = 0;
            tsq_status s1 = tsq_layer_info(h->h, key, &a), s2 = tsq_layer_info(h->h, key, &b);
            FZ_REQUIRE(s1 == s2 && a == b && (s1 == TSQ_OK || s1 == TSQ_ERR_INVALID),
                       "layer_info %d", (int)key);
            if (s1 == TSQ_OK)
                FZ_REQUIRE(a >= 0, "layer_info %d = %lld", (int)key, (long long)a);
            return;
        }
    } else {
        do_get(h, key);
        (void)w;
        return;
    }
    fz_check_msg(errmsg(h), 1, h->name);
    require_unchanged(h, key, &before, "special call");
}

/* ---- the world ------------------------------------------------------------- */

static void add(world *w, int kind, void *h, const char *name)
{
    FZ_REQUIRE(h != NULL && w->n < MAX_HANDLES, "handle %s", name);
    w->hs[w->n].kind = kind;
    w->hs[w->n].h = h;
    w->hs[w->n].name = name;
    w->n++;
}

static tsq_layer *must(tsq_status st, tsq_layer *l, const char *what)
{
    FZ_REQUIRE(st == TSQ_OK && l, "%s: %s", what, tsq_status_string(st));
    return l;
}

static void append(world *w, tsq_layer *l, const char *name)
{
    FZ_REQUIRE(tsq_net_append(w->net, l) == TSQ_OK, "append %s: %s", name,
               tsq_net_errmsg(w->net));
    add(w, K_LAYER, l, name);
}

static void build(world *w)
{
    static const int64_t in_shape[3] = {2, 4, 4}, tshape[2] = {3, 5};
    tsq_context *ctx;
    tsq_quantizer *q = NULL;
    tsq_regressor *r = NULL;
    tsq_plan *plan = NULL;
    tsq_layer *l = NULL;
    tsq_tensor *t = NULL;
    int i;
    memset(w, 0, sizeof *w);
    ctx = w->ctx = fz_context(&w->heap);
    add(w, K_CONTEXT, ctx, "context");
    FZ_REQUIRE(tsq_quantizer_create(ctx, 2, 0, &q) == TSQ_OK, "quantizer");
    add(w, K_QUANTIZER, q, "quantizer");
    FZ_REQUIRE(tsq_quantizer_create(ctx, 3, 3, &q) == TSQ_OK, "quantizer");
    add(w, K_QUANTIZER, q, "per-channel quantizer");
    FZ_REQUIRE(tsq_regressor_create(ctx, &r) == TSQ_OK, "regressor");
    add(w, K_REGRESSOR, r, "regressor");
    for (i = 0; i < 3; i++) {
        static const int32_t dt[3] = {TSQ_DTYPE_F32, TSQ_DTYPE_U8, TSQ_DTYPE_I8};
        FZ_REQUIRE(tsq_tensor_create(ctx, dt[i], 2, tshape, &t) == TSQ_OK, "tensor");
        add(w, K_TENSOR, t, "tensor");
    }

    /* stand-alone layers, one of each kind */
    add(w, K_LAYER, must(tsq_layer_dense_create(ctx, 4, 3, &l), l, "dense"), "dense");
    add(w, K_LAYER, must(tsq_layer_conv2d_create(ctx, 2, 2, 3, 3, 1, 1, &l), l, "conv"), "conv2d");
    add(w, K_LAYER, must(tsq_layer_batchnorm_create(ctx, 3, &l), l, "bn"), "batchnorm");
    add(w, K_LAYER, must(tsq_layer_relu_create(ctx, &l), l, "relu"), "relu");
    add(w, K_LAYER, must(tsq_layer_act_quant_create(ctx, 2, 0.3f, 0.6f, &l), l, "aq"), "act_quant");
    add(w, K_LAYER, must(tsq_layer_maxpool2d_create(ctx, 2, 2, &l), l, "pool"), "maxpool2d");
    add(w, K_LAYER, must(tsq_layer_global_avgpool_create(ctx, &l), l, "gap"), "global_avgpool");
    add(w, K_LAYER, must(tsq_layer_flatten_create(ctx, &l), l, "flatten"), "flatten");
    add(w, K_LAYER, must(tsq_layer_lowbit_dense_create(ctx, 4, 3, 2, &l), l, "lbd"),
        "lowbit_dense");
    add(w, K_LAYER, must(tsq_layer_lowbit_conv2d_create(ctx, 2, 2, 3, 3, 1, 1, 3, &l), l, "lbc"),
        "lowbit_conv2d");

    /* a converted net: codes -> low-bit conv -> quantizer -> low-bit dense,
     * then float batch-norm, dense, ReLU */
    FZ_REQUIRE(tsq_net_create(ctx, 3, in_shape, &w->net) == TSQ_OK, "net");
    add(w, K_NET, w->net, "net");
    l = must(tsq_layer_act_quant_create(ctx, 2, 0.1f, 0.5f, &l), l, "aq");
    FZ_REQUIRE(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1) == TSQ_OK, "codes");
    append(w, l, "net act_quant (codes)");
    append(w, must(tsq_layer_lowbit_conv2d_create(ctx, 2, 2, 3, 3, 1, 1, 2, &l), l, "lbc"),
           "net lowbit_conv2d");
    l = must(tsq_layer_act_quant_create(ctx, 2, 0.2f, 0.4f, &l), l, "aq");
    FZ_REQUIRE(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1) == TSQ_OK, "codes");
    append(w, l, "net act_quant 2");
    append(w, must(tsq_layer_flatten_create(ctx, &l), l, "flatten"), "net flatten");
    append(w, must(tsq_layer_lowbit_dense_create(ctx, 32, 3, 2, &l), l, "lbd"),
           "net lowbit_dense");
    append(w, must(tsq_layer_batchnorm_create(ctx, 3, &l), l, "bn"), "net batchnorm");
    append(w, must(tsq_layer_dense_create(ctx, 3, 2, &l), l, "dense"), "net dense");
    append(w, must(tsq_layer_relu_create(ctx, &l), l, "relu"), "net relu");
    FZ_REQUIRE(tsq_net_tsq_regressor(w->net, &r) == TSQ_OK, "net regressor");
    add(w, K_REGRESSOR, r, "net regressor");
    FZ_REQUIRE(tsq_plan_create(ctx, w->net, &plan) == TSQ_OK, "plan: %s",
               tsq_context_errmsg(ctx));
    add(w, K_PLAN, plan, "plan");
}

static void teardown(world *w)
{
    int i;
    for (i = 0; i < w->n; i++) {
        handle *h = &w->hs[i];
        if (h->kind == K_QUANTIZER)
            tsq_quantizer_destroy(h->h);
        else if (h->kind == K_REGRESSOR && strcmp(h->name, "regressor") == 0)
            tsq_regressor_destroy(h->h);
        else if (h->kind == K_LAYER)
            tsq_layer_destroy(h->h); /* does nothing for the net's own layers */
        else if (h->kind == K_PLAN)
            tsq_plan_destroy(h->h);
        else if (h->kind == K_TENSOR)
            tsq_tensor_destroy(h->h);
    }
    tsq_net_destroy(w->net);
    fz_context_done(w->ctx, &w->heap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static world w; /* large: keep it off the stack */
    size_t pos;
    int ops = 0, i;
    build(&w);
    for (pos = 0; pos + OP_BYTES <= size && ops < MAX_OPS; pos += OP_BYTES, ops++) {
        const uint8_t *op = data + pos;
        const handle *h = &w.hs[op[0] % w.n];
        uint8_t action = op[1] & 3, vmode = (op[1] >> 2) & 3;
        int32_t key = (int32_t)fz_get_u32(op + 2);
        if (!(op[1] & 0x10))
            key = key_base(h, action == 3) + (int32_t)(op[2] % 16) - 2;
        switch (action) {
        case 0: do_set(h, key, vmode, op + 6); break;
        case 1: do_get(h, key); break;
        case 2: do_bounds(h, key); break;
        default: do_special(&w, h, key, vmode, op + 6); break;
        }
        for (i = 0; i < w.n; i++)
            fz_check_msg(errmsg(&w.hs[i]), 0, w.hs[i].name);
    }
    teardown(&w);
    return 0;
}
