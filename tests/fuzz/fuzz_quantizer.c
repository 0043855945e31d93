/* libFuzzer target: the serialized activation quantizer, tsq_quantizer_load
 * (include/tsq/quantizer.h: "TSQQ", version 1, CRC-32 at the end).
 *
 * Each input is loaded as given and, when its checksum is wrong, again with
 * the checksum recomputed, so that mutations reach the field checks. For
 * every load it asserts:
 *  - the status is a documented one (OK, FORMAT, VERSION, NO_MEMORY), *out
 *    is set exactly on success, a failure leaves a message;
 *  - on success: saving gives back exactly the input bytes (the format has
 *    no slack: every field is stored and checked), and the saved bytes load
 *    to a quantizer that saves the same again;
 *  - its options read back inside their bounds;
 *  - if it is fitted, on a fixed tensor of the right shape: codes lie in
 *    0 .. 2^bits - 1; forward(x) == decode(encode(x)) bit for bit;
 *    encode(decode(k)) == k for every code k with k * delta > eps (the
 *    promise of tsq_quantizer_decode); backward passes the gradient exactly
 *    where 0 < x < (2^bits - 1) * delta; if it is not fitted, encode fails
 *    with TSQ_ERR_STATE and leaves the codes alone;
 *  - for quantizers with few channels, tsq_learn_codes on the fixed tensor
 *    fits it, and the fitted quantizer round-trips through save/load;
 *  - every block allocated through the context is freed. */
#include "fuzz_common.h"

#define INNER 3   /* elements per channel and sample */
#define BATCH 2
#define MAX_LEARN_CHANNELS 16

static void repair_checksum(uint8_t *p, size_t n)
{
    if (n >= 8)
        fz_put_u32(p + n - 4, fz_crc32(p, n - 4));
}

static uint8_t *save(tsq_quantizer *q, uint64_t *size)
{
    uint64_t n = 0, n2 = 0;
    uint8_t *buf;
    tsq_status st = tsq_quantizer_save(q, NULL, 0, &n);
    FZ_REQUIRE(st == TSQ_OK && n >= 56, "quantizer_save (size): %s", tsq_status_string(st));
    buf = malloc((size_t)n);
    FZ_REQUIRE(buf != NULL, "malloc");
    st = tsq_quantizer_save(q, buf, n - 1, &n2);
    FZ_REQUIRE(st == TSQ_ERR_TOO_SMALL && n2 == n, "save into a short buffer: %s",
               tsq_status_string(st));
    st = tsq_quantizer_save(q, buf, n, &n2);
    FZ_REQUIRE(st == TSQ_OK && n2 == n, "quantizer_save: %s: %s", tsq_status_string(st),
               tsq_quantizer_errmsg(q));
    fz_check_msg(tsq_quantizer_errmsg(q), 0, "quantizer");
    FZ_REQUIRE(tsq_quantizer_errmsg(q)[0] == '\0', "message after a successful save");
    *size = n;
    return buf;
}

static void check_options(tsq_quantizer *q)
{
    int32_t key;
    for (key = -1; key <= 9; key++) {
        double v = 0, lo = 0, hi = 0;
        tsq_status g = tsq_quantizer_get_option(q, key, &v);
        tsq_status b = tsq_quantizer_option_bounds(key, &lo, &hi);
        FZ_REQUIRE(g == b, "key %d: get %d, bounds %d", (int)key, (int)g, (int)b);
        if (g == TSQ_OK)
            FZ_REQUIRE(v >= lo && v <= hi, "key %d = %g outside %g .. %g", (int)key, v, lo, hi);
    }
}

static tsq_tensor *tensor(tsq_context *ctx, int32_t dtype, int64_t channels)
{
    int64_t shape[3] = {BATCH, channels > 0 ? channels : 4, INNER};
    tsq_tensor *t = NULL;
    tsq_status st = tsq_tensor_create(ctx, dtype, 3, shape, &t);
    FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "tensor_create: %s",
               tsq_status_string(st));
    return t;
}

static void *data_of(tsq_tensor *t)
{
    void *p = NULL;
    tsq_tensor_data(t, &p);
    return p;
}

/* The channel of element i of a (BATCH, C, INNER) tensor. */
static int64_t channel_of(int64_t i, int64_t c)
{
    return (i / INNER) % c;
}

/* Values around the levels of each channel (multiples of delta / 2, some
 * negative), and a few plain ones; always finite. */
static void fill_x(tsq_quantizer *q, tsq_tensor *x, int64_t channels)
{
    float *p = data_of(x);
    int64_t n = 0, i, c = channels > 0 ? channels : 4;
    tsq_tensor_numel(x, &n);
    for (i = 0; i < n; i++) {
        float eps = 0, delta = 1, v;
        tsq_quantizer_get_channel(q, channels > 0 ? channel_of(i, c) : 0, &eps, &delta);
        v = i % 5 == 4 ? (float)(i % 7) * 0.3f - 0.6f : delta * ((float)(i % 11) * 0.5f - 0.5f);
        if (i % 13 == 12)
            v = eps;
        p[i] = isfinite(v) ? v : 0.0f;
    }
}

static void check_fitted(tsq_context *ctx, tsq_quantizer *q, int64_t channels, int32_t bits)
{
    int32_t maxcode = (1 << bits) - 1;
    tsq_tensor *x = tensor(ctx, TSQ_DTYPE_F32, channels), *y = tensor(ctx, TSQ_DTYPE_F32, channels);
    tsq_tensor *y2 = tensor(ctx, TSQ_DTYPE_F32, channels), *k = tensor(ctx, TSQ_DTYPE_U8, channels);
    tsq_tensor *k2 = tensor(ctx, TSQ_DTYPE_U8, channels);
    int64_t n = 0, i, c = channels > 0 ? channels : 4;
    tsq_status st;
    if (!x || !y || !y2 || !k || !k2)
        goto done;
    fill_x(q, x, channels);
    tsq_tensor_numel(x, &n);
    st = tsq_quantizer_encode(q, x, k);
    FZ_REQUIRE(st == TSQ_OK, "encode: %s: %s", tsq_status_string(st), tsq_quantizer_errmsg(q));
    for (i = 0; i < n; i++)
        FZ_REQUIRE(((uint8_t *)data_of(k))[i] <= maxcode, "code %d > %d",
                   ((uint8_t *)data_of(k))[i], (int)maxcode);
    FZ_REQUIRE(tsq_quantizer_decode(q, k, y) == TSQ_OK, "decode: %s", tsq_quantizer_errmsg(q));
    FZ_REQUIRE(tsq_quantizer_forward(q, x, y2) == TSQ_OK, "forward: %s", tsq_quantizer_errmsg(q));
    FZ_REQUIRE(memcmp(data_of(y), data_of(y2), (size_t)n * 4) == 0,
               "forward differs from decode(encode)");

    /* backward: the straight-through mask */
    {
        float *g = data_of(y2), *xs = data_of(x), *gin = data_of(y);
        for (i = 0; i < n; i++)
            g[i] = (float)(i + 1);
        FZ_REQUIRE(tsq_quantizer_backward(q, x, y2, y) == TSQ_OK, "backward: %s",
                   tsq_quantizer_errmsg(q));
        for (i = 0; i < n; i++) {
            float eps = 0, delta = 0;
            tsq_quantizer_get_channel(q, channels > 0 ? channel_of(i, c) : 0, &eps, &delta);
            FZ_REQUIRE(gin[i] == ((xs[i] > 0.0f && xs[i] < (float)maxcode * delta) ? g[i] : 0.0f),
                       "backward at %lld: x %g delta %g gives %g", (long long)i, xs[i], delta,
                       gin[i]);
        }
    }

    /* encode(decode(k)) == k where k * delta > eps: every code in turn */
    {
        uint8_t *codes = data_of(k), *back = data_of(k2);
        float *levels = data_of(y);
        for (i = 0; i < n; i++)
            codes[i] = (uint8_t)(i % (maxcode + 1));
        FZ_REQUIRE(tsq_quantizer_decode(q, k, y) == TSQ_OK, "decode");
        FZ_REQUIRE(tsq_quantizer_encode(q, y, k2) == TSQ_OK, "encode of levels: %s",
                   tsq_quantizer_errmsg(q));
        for (i = 0; i < n; i++) {
            float eps = 0, delta = 0;
            tsq_quantizer_get_channel(q, channels > 0 ? channel_of(i, c) : 0, &eps, &delta);
            if ((float)codes[i] * delta > eps)
                FZ_REQUIRE(back[i] == codes[i], "encode(decode(%d)) = %d (eps %g delta %g, "
                           "level %g)", codes[i], back[i], eps, delta, levels[i]);
        }
        /* a code above the alphabet is refused, y untouched */
        if (maxcode < 255) {
            float before = levels[0];
            codes[n - 1] = (uint8_t)(maxcode + 1);
            FZ_REQUIRE(tsq_quantizer_decode(q, k, y) == TSQ_ERR_INVALID, "decode of code %d",
                       maxcode + 1);
            FZ_REQUIRE(fz_same_float(levels[0], before), "decode wrote on failure");
            fz_check_msg(tsq_quantizer_errmsg(q), 1, "decode");
        }
    }
done:
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(y2);
    tsq_tensor_destroy(k);
    tsq_tensor_destroy(k2);
}

static void check_unfitted(tsq_context *ctx, tsq_quantizer *q, int64_t channels)
{
    tsq_tensor *x = tensor(ctx, TSQ_DTYPE_F32, channels), *k = tensor(ctx, TSQ_DTYPE_U8, channels);
    if (x && k) {
        uint8_t *codes = data_of(k);
        codes[0] = 77;
        FZ_REQUIRE(tsq_quantizer_encode(q, x, k) == TSQ_ERR_STATE, "encode when not fitted");
        FZ_REQUIRE(codes[0] == 77, "encode wrote on failure");
        fz_check_msg(tsq_quantizer_errmsg(q), 1, "encode");
    }
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(k);
}

/* tsq_learn_codes on the fixed tensor, then a save/load/save round trip. */
static void learn(tsq_context *ctx, tsq_quantizer *q, int64_t channels)
{
    tsq_tensor *x = tensor(ctx, TSQ_DTYPE_F32, channels), *k = tensor(ctx, TSQ_DTYPE_U8, channels);
    double err = -1, sparsity = -1;
    tsq_status st;
    if (x && k) {
        float *p = data_of(x);
        int64_t n = 0, i;
        tsq_tensor_numel(x, &n);
        for (i = 0; i < n; i++)
            p[i] = (float)((i * 7) % 17) * 0.125f - 0.5f;
        st = tsq_learn_codes(q, x, k, &err, &sparsity);
        FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "learn_codes: %s: %s",
                   tsq_status_string(st), tsq_quantizer_errmsg(q));
        if (st == TSQ_OK) {
            uint8_t *a, *b;
            uint64_t na = 0, nb = 0;
            tsq_quantizer *back = NULL;
            FZ_REQUIRE(err >= 0 && sparsity >= 0 && sparsity <= 1, "error %g sparsity %g", err,
                       sparsity);
            a = save(q, &na);
            st = tsq_quantizer_load(ctx, a, na, &back);
            FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "a learned quantizer does not "
                       "load: %s: %s", tsq_status_string(st), tsq_context_errmsg(ctx));
            if (st == TSQ_OK) {
                b = save(back, &nb);
                FZ_REQUIRE(na == nb && memcmp(a, b, (size_t)na) == 0, "learned round trip");
                free(b);
                tsq_quantizer_destroy(back);
            }
            free(a);
        }
    }
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(k);
}

static void load_one(const uint8_t *data, size_t size)
{
    fz_heap heap;
    tsq_context *ctx = fz_context(&heap);
    tsq_quantizer *q = (tsq_quantizer *)&heap, *q2 = NULL; /* non-NULL: must be reset */
    uint8_t *a, *b;
    uint64_t na = 0, nb = 0;
    double channels = 0, fitted = 0, bits = 0;
    tsq_status st = tsq_quantizer_load(ctx, data, size, &q);
    if (st != TSQ_OK) {
        FZ_REQUIRE(q == NULL, "out not cleared on failure");
        FZ_REQUIRE(st == TSQ_ERR_FORMAT || st == TSQ_ERR_VERSION || st == TSQ_ERR_NO_MEMORY,
                   "quantizer_load: undocumented status %s: %s", tsq_status_string(st),
                   tsq_context_errmsg(ctx));
        fz_check_msg(tsq_context_errmsg(ctx), 1, "quantizer_load");
        fz_context_done(ctx, &heap);
        return;
    }
    FZ_REQUIRE(q != NULL, "quantizer_load OK without a quantizer");
    check_options(q);
    a = save(q, &na);
    FZ_REQUIRE(na == size && memcmp(a, data, size) == 0,
               "saving a loaded quantizer does not give back its bytes (%llu vs %zu)",
               (unsigned long long)na, size);
    st = tsq_quantizer_load(ctx, a, na, &q2);
    FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "reload: %s", tsq_status_string(st));
    if (st == TSQ_OK) {
        b = save(q2, &nb);
        FZ_REQUIRE(na == nb && memcmp(a, b, (size_t)na) == 0, "re-save differs");
        free(b);
        tsq_quantizer_destroy(q2);
    }
    free(a);

    tsq_quantizer_get_option(q, TSQ_QUANTIZER_CHANNELS, &channels);
    tsq_quantizer_get_option(q, TSQ_QUANTIZER_FITTED, &fitted);
    tsq_quantizer_get_option(q, TSQ_QUANTIZER_BITS, &bits);
    if (channels <= 4096) {
        if (fitted == 1)
            check_fitted(ctx, q, (int64_t)channels, (int32_t)bits);
        else
            check_unfitted(ctx, q, (int64_t)channels);
        if (channels <= MAX_LEARN_CHANNELS)
            learn(ctx, q, (int64_t)channels);
    }
    tsq_quantizer_destroy(q);
    fz_context_done(ctx, &heap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *fixed;
    load_one(data, size);
    if (size < 8 || size > (1u << 20))
        return 0;
    fixed = malloc(size);
    if (!fixed)
        return 0;
    memcpy(fixed, data, size);
    repair_checksum(fixed, size);
    if (memcmp(fixed, data, size) != 0)
        load_one(fixed, size);
    free(fixed);
    return 0;
}
