/* The option calls of every handle, through one table of expectations
 * written from the headers: tsq_<handle>_set_option / get_option /
 * option_bounds for the context, the quantizer, the regressor, the layers
 * and the net's conversion options. For every key: its default, its bounds,
 * both bounds accepted and read back, values just outside refused, NaN and
 * infinities refused, fractions refused for integer options, keys of every
 * other family refused with a message naming that family, and a refusal
 * leaves the value alone. Then the options that a file holds survive it:
 * the layer options of a model file and the quantizer's serialized form. */
#include "harness.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* One face for the five families                                       */
/* ------------------------------------------------------------------ */

enum { F_CONTEXT, F_QUANTIZER, F_REGRESSOR, F_LAYER, F_NET, NFAMILIES };

typedef struct family {
    const char *name; /* as the messages spell it */
    int32_t first, last;
    int32_t frozen_first, frozen_last; /* the numbers of release 0.1.0 */
} family;

/* The key numbers are part of the ABI, which abidiff cannot see: a family
 * may grow at its end (a new key changes its frozen_last here, in the
 * same commit), never renumber. */
static const family families[NFAMILIES] = {
    {"context", TSQ_CONTEXT_THREADS, TSQ_CONTEXT_CPU_MASK, 0x0101, 0x0103},
    {"quantizer", TSQ_QUANTIZER_BITS, TSQ_QUANTIZER_OBSERVED, 0x0201, 0x0208},
    {"regressor", TSQ_REGRESSOR_WEIGHT_BITS, TSQ_REGRESSOR_RESTARTS, 0x0301, 0x030D},
    {"layer option", TSQ_LAYER_OPT_TRAINABLE, TSQ_LAYER_OPT_AQ_LEARN_DELTA, 0x0401, 0x040A},
    {"net conversion", TSQ_NET_TSQ_ACT_BITS, TSQ_NET_TSQ_SHADOW_CLIP, 0x0601, 0x0609},
};

static tsq_status set(int f, void *h, int32_t key, double v)
{
    switch (f) {
    case F_CONTEXT: return tsq_context_set_option(h, key, v);
    case F_QUANTIZER: return tsq_quantizer_set_option(h, key, v);
    case F_REGRESSOR: return tsq_regressor_set_option(h, key, v);
    case F_LAYER: return tsq_layer_set_option(h, key, v);
    default: return tsq_net_set_conversion_option(h, key, v);
    }
}

static tsq_status get(int f, const void *h, int32_t key, double *v)
{
    switch (f) {
    case F_CONTEXT: return tsq_context_get_option(h, key, v);
    case F_QUANTIZER: return tsq_quantizer_get_option(h, key, v);
    case F_REGRESSOR: return tsq_regressor_get_option(h, key, v);
    case F_LAYER: return tsq_layer_get_option(h, key, v);
    default: return tsq_net_get_conversion_option(h, key, v);
    }
}

static tsq_status bounds(int f, int32_t key, double *lo, double *hi)
{
    switch (f) {
    case F_CONTEXT: return tsq_context_option_bounds(key, lo, hi);
    case F_QUANTIZER: return tsq_quantizer_option_bounds(key, lo, hi);
    case F_REGRESSOR: return tsq_regressor_option_bounds(key, lo, hi);
    case F_LAYER: return tsq_layer_option_bounds(key, lo, hi);
    default: return tsq_net_conversion_option_bounds(key, lo, hi);
    }
}

static const char *errmsg(int f, const void *h)
{
    switch (f) {
    case F_CONTEXT: return tsq_context_errmsg(h);
    case F_QUANTIZER: return tsq_quantizer_errmsg(h);
    case F_REGRESSOR: return tsq_regressor_errmsg(h);
    case F_LAYER: return tsq_layer_errmsg(h);
    default: return tsq_net_errmsg(h);
    }
}

/* ------------------------------------------------------------------ */
/* What the headers promise                                             */
/* ------------------------------------------------------------------ */

/* Handles the rows refer to. */
enum { H_CTX, H_QUANT, H_REG, H_DENSE, H_CONV, H_BN, H_RELU, H_AQ, H_LOWBIT, H_NET, NHANDLES };

typedef struct expect {
    int family, handle;
    int32_t key;
    double def, lo, hi;
    int integer, read_only;
} expect;

static const expect rows[] = {
    {F_CONTEXT, H_CTX, TSQ_CONTEXT_THREADS, 1, 1, 256, 1, 0},
    {F_CONTEXT, H_CTX, TSQ_CONTEXT_LOG_LEVEL, 1, 0, 4, 1, 0},
    {F_CONTEXT, H_CTX, TSQ_CONTEXT_CPU_MASK, 4294967295.0, 0, 4294967295.0, 1, 0},
    /* the quantizer is made with 3 bits: BITS' default is create's */
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_BITS, 3, 1, 8, 1, 0},
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_EPS_MODE, TSQ_EPS_JOINT, TSQ_EPS_FIXED, TSQ_EPS_PLAIN, 1,
     0},
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_EPS, 0.32, 0, FLT_MAX, 0, 0},
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_SPARSITY, 0.63, 0, 1, 0, 0},
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_HIST_RESOLUTION, 0, 0, 10, 1, 0},
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_CHANNELS, 0, 0, 0, 1, 1},
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_FITTED, 0, 0, 1, 1, 1},
    {F_QUANTIZER, H_QUANT, TSQ_QUANTIZER_OBSERVED, 0, 0, 0, 1, 1},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_WEIGHT_BITS, 2, 2, 8, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_OFFSET, 1, 0, 1, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_LOSS, TSQ_LOSS_QUANTIZED, TSQ_LOSS_QUANTIZED,
     TSQ_LOSS_LINEAR, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_ROUNDS, 10, 0, 100000, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_LINEAR_ROUNDS, 3, 0, 100000, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_SWEEPS, 8, 1, 10000, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_LAMBDA0, 0.1, 1e-12, 1e12, 0, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_LAMBDA_GROWTH, 1.1, 1, 1000, 0, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_TOLERANCE, 1e-4, 0, 1, 0, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_BATCH_ROWS, 1024, 16, 1048576, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_MARGIN, 0.5, 0, 0.5, 0, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_POLISH, 4, 0, 1000, 1, 0},
    {F_REGRESSOR, H_REG, TSQ_REGRESSOR_RESTARTS, -1, -1, 4, 1, 0},
    {F_LAYER, H_DENSE, TSQ_LAYER_OPT_TRAINABLE, 1, 0, 1, 1, 0},
    {F_LAYER, H_BN, TSQ_LAYER_OPT_BN_MOMENTUM, 0.1, DBL_MIN, 1, 0, 0},
    {F_LAYER, H_BN, TSQ_LAYER_OPT_BN_EPS, 1e-5, 1e-12, 1, 0, 0},
    {F_LAYER, H_BN, TSQ_LAYER_OPT_BN_FROZEN, 0, 0, 1, 1, 0},
    {F_LAYER, H_AQ, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 0, 0, 1, 1, 0},
    {F_LAYER, H_RELU, TSQ_LAYER_OPT_TSQ_SELECT, -1, -1, 1, 1, 0},
    {F_LAYER, H_LOWBIT, TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA, 0, 0, 1, 1, 0},
    {F_LAYER, H_DENSE, TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 0, 0, 8, 1, 0},
    {F_LAYER, H_CONV, TSQ_LAYER_OPT_QAT_SCALE, 0, 0, 1, 1, 0},
    {F_LAYER, H_AQ, TSQ_LAYER_OPT_AQ_LEARN_DELTA, 0, 0, 1, 1, 0},
    /* the net's options that stand for the quantizer's have its defaults */
    {F_NET, H_NET, TSQ_NET_TSQ_ACT_BITS, 2, 1, 8, 1, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_PER_CHANNEL, 0, 0, 1, 1, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_EPS_MODE, TSQ_EPS_JOINT, TSQ_EPS_FIXED, TSQ_EPS_PLAIN, 1, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_EPS, 0.32, 0, FLT_MAX, 0, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_SPARSITY, 0.63, 0, 1, 0, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_POSITIONS, 0, 0, 1048576, 1, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_SEQUENTIAL, 0, 0, 1, 1, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_KEEP_ROWS_MIB, 512, 0, 1048576, 1, 0},
    {F_NET, H_NET, TSQ_NET_TSQ_SHADOW_CLIP, 0.45, 0, 0.49, 0, 0},
};

typedef struct handles {
    void *h[NHANDLES];
} handles;

static void make_handles(tsq_context *ctx, handles *hs)
{
    const int64_t shape[1] = {4};
    tsq_layer *l = NULL;
    memset(hs, 0, sizeof *hs);
    hs->h[H_CTX] = ctx;
    TH_OK(ctx, tsq_quantizer_create(ctx, 3, 0, (tsq_quantizer **)&hs->h[H_QUANT]));
    TH_OK(ctx, tsq_regressor_create(ctx, (tsq_regressor **)&hs->h[H_REG]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 4, 3, &l));
    hs->h[H_DENSE] = l;
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, 2, 3, 3, 3, 1, 1, &l));
    hs->h[H_CONV] = l;
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 4, &l));
    hs->h[H_BN] = l;
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    hs->h[H_RELU] = l;
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.25f, 0.5f, &l));
    hs->h[H_AQ] = l;
    TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 4, 3, 2, &l));
    hs->h[H_LOWBIT] = l;
    TH_OK(ctx, tsq_net_create(ctx, 1, shape, (tsq_net **)&hs->h[H_NET]));
}

static void free_handles(handles *hs)
{
    int i;
    tsq_quantizer_destroy(hs->h[H_QUANT]);
    tsq_regressor_destroy(hs->h[H_REG]);
    for (i = H_DENSE; i <= H_LOWBIT; i++)
        tsq_layer_destroy(hs->h[i]);
    tsq_net_destroy(hs->h[H_NET]);
}

#define HAS(msg, what)                                                                   \
    ck_assert_msg(strstr((msg), (what)) != NULL, "message \"%s\" lacks \"%s\"", (msg), (what))

/* A refused set: TSQ_ERR_INVALID, a message containing `what`, the value
 * still `keep`. */
static void refused(const expect *e, void *h, double v, const char *what, double keep)
{
    double got = NAN;
    tsq_status st = set(e->family, h, e->key, v);
    ck_assert_msg(st == TSQ_ERR_INVALID, "%s key 0x%04x = %g: %s", families[e->family].name,
                  (unsigned)e->key, v, tsq_status_string(st));
    HAS(errmsg(e->family, h), what);
    ck_assert_int_eq(get(e->family, h, e->key, &got), TSQ_OK);
    ck_assert_msg(got == keep, "key 0x%04x changed to %g by a refused set", (unsigned)e->key,
                  got);
}

static void check_row(const expect *e, void *h)
{
    double v = NAN, lo = NAN, hi = NAN, below, above;
    /* default and bounds */
    ck_assert_int_eq(get(e->family, h, e->key, &v), TSQ_OK);
    ck_assert_msg(v == e->def, "key 0x%04x defaults to %.17g, not %.17g", (unsigned)e->key, v,
                  e->def);
    ck_assert_int_eq(bounds(e->family, e->key, &lo, &hi), TSQ_OK);
    if (e->read_only) {
        refused(e, h, e->def, "read-only", e->def);
        return;
    }
    ck_assert_msg(lo == e->lo && hi == e->hi, "key 0x%04x: bounds [%g, %g], not [%g, %g]",
                  (unsigned)e->key, lo, hi, e->lo, e->hi);
    /* both ends accepted, read back exactly */
    TH_OK(NULL, set(e->family, h, e->key, lo));
    ck_assert_int_eq(get(e->family, h, e->key, &v), TSQ_OK);
    ck_assert(v == lo);
    ck_assert_str_eq(errmsg(e->family, h), "");
    TH_OK(NULL, set(e->family, h, e->key, hi));
    ck_assert_int_eq(get(e->family, h, e->key, &v), TSQ_OK);
    ck_assert(v == hi);
    TH_OK(NULL, set(e->family, h, e->key, e->def));
    /* just outside: the next integer, or a value between 0 and a positive
     * lower bound (DBL_MIN / 2 is a denormal), or twice a huge upper one */
    below = e->integer ? lo - 1 : lo > 0 ? lo / 2 : lo - 1;
    above = e->integer ? hi + 1 : hi > 1e15 ? hi * 2 : hi + 1;
    refused(e, h, below, "outside", e->def);
    refused(e, h, above, "outside", e->def);
    refused(e, h, NAN, "NaN", e->def);
    refused(e, h, INFINITY, "outside", e->def);
    refused(e, h, -INFINITY, "outside", e->def);
    if (e->integer)
        refused(e, h, lo + 0.5, "must be an integer", e->def);
}

/* Every key of every other family is refused by every call, naming the
 * family it belongs to; so is the first unused key of its own family. */
static void check_families(int f, void *h)
{
    char want[96];
    double v = 0, lo = 0, hi = 0;
    int g;
    for (g = 0; g < NFAMILIES; g++) {
        int32_t key;
        if (g == f)
            continue;
        snprintf(want, sizeof want, "a %s key, not a %s one", families[g].name,
                 families[f].name);
        for (key = families[g].first; key <= families[g].last; key++) {
            ck_assert_int_eq(set(f, h, key, 1), TSQ_ERR_INVALID);
            HAS(errmsg(f, h), want);
            ck_assert_int_eq(get(f, h, key, &v), TSQ_ERR_INVALID);
            HAS(errmsg(f, h), want);
            ck_assert_int_eq(bounds(f, key, &lo, &hi), TSQ_ERR_INVALID);
        }
    }
    snprintf(want, sizeof want, "no %s option", families[f].name);
    ck_assert_int_eq(set(f, h, families[f].last + 1, 1), TSQ_ERR_INVALID);
    HAS(errmsg(f, h), want);
    ck_assert_int_eq(get(f, h, families[f].first - 1, &v), TSQ_ERR_INVALID);
    ck_assert_int_eq(bounds(f, families[f].last + 1, &lo, &hi), TSQ_ERR_INVALID);
    ck_assert_int_eq(bounds(f, families[f].first, NULL, &hi), TSQ_ERR_NULL);
    ck_assert_int_eq(get(f, h, families[f].first, NULL), TSQ_ERR_NULL);
    HAS(errmsg(f, h), "value is NULL");
    ck_assert_int_eq(set(f, NULL, families[f].first, 1), TSQ_ERR_NULL);
    ck_assert_int_eq(get(f, NULL, families[f].first, &v), TSQ_ERR_NULL);
}

START_TEST(test_every_option)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    handles hs;
    size_t i;
    int f, covered[NFAMILIES] = {0};
    make_handles(ctx, &hs);
    for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        check_row(&rows[i], hs.h[rows[i].handle]);
        covered[rows[i].family]++;
    }
    /* every key of every family has a row, at its frozen number */
    for (f = 0; f < NFAMILIES; f++) {
        ck_assert_int_eq(covered[f], families[f].last - families[f].first + 1);
        ck_assert_int_eq(families[f].first, families[f].frozen_first);
        ck_assert_int_eq(families[f].last, families[f].frozen_last);
    }
    check_families(F_CONTEXT, hs.h[H_CTX]);
    check_families(F_QUANTIZER, hs.h[H_QUANT]);
    check_families(F_REGRESSOR, hs.h[H_REG]);
    check_families(F_LAYER, hs.h[H_DENSE]);
    check_families(F_NET, hs.h[H_NET]);
    free_handles(&hs);
    th_context_done(ctx, &st);
}
END_TEST

/* A layer option of another kind is refused by set and get, naming the
 * kind; so are the combinations a kind refuses. */
START_TEST(test_layer_option_scope)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    handles hs;
    double v = 0;
    make_handles(ctx, &hs);
    ck_assert_int_eq(tsq_layer_set_option(hs.h[H_DENSE], TSQ_LAYER_OPT_BN_EPS, 1e-3),
                     TSQ_ERR_INVALID);
    HAS(tsq_layer_errmsg(hs.h[H_DENSE]), "layer_set_option: bn_eps does not apply to a dense layer");
    ck_assert_int_eq(tsq_layer_get_option(hs.h[H_AQ], TSQ_LAYER_OPT_QAT_SCALE, &v),
                     TSQ_ERR_INVALID);
    HAS(tsq_layer_errmsg(hs.h[H_AQ]), "qat_scale does not apply to an act_quant layer");
    ck_assert_int_eq(tsq_layer_set_option(hs.h[H_LOWBIT], TSQ_LAYER_OPT_TSQ_SELECT, 1),
                     TSQ_ERR_INVALID);
    HAS(tsq_layer_errmsg(hs.h[H_LOWBIT]), "does not apply to a lowbit_dense layer");
    ck_assert_int_eq(tsq_layer_set_option(hs.h[H_DENSE], TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 1),
                     TSQ_ERR_INVALID); /* 1 bit is not a weight alphabet */
    TH_OK(ctx, tsq_layer_get_option(hs.h[H_DENSE], TSQ_LAYER_OPT_QAT_WEIGHT_BITS, &v));
    ck_assert(v == 0);
    TH_OK(ctx, tsq_layer_set_option(hs.h[H_AQ], TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1));
    ck_assert_int_eq(tsq_layer_set_option(hs.h[H_AQ], TSQ_LAYER_OPT_AQ_LEARN_DELTA, 1),
                     TSQ_ERR_INVALID);
    TH_OK(ctx, tsq_layer_get_option(hs.h[H_AQ], TSQ_LAYER_OPT_AQ_LEARN_DELTA, &v));
    ck_assert(v == 0);
    free_handles(&hs);
    th_context_done(ctx, &st);
}
END_TEST

/* The net's conversion options are refused while a session runs, and a
 * clone keeps them and its regressor's options (all of them). */
START_TEST(test_net_conversion_options_clone)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[1] = {4};
    tsq_net *net = NULL, *copy = NULL;
    tsq_regressor *reg = NULL, *creg = NULL;
    tsq_layer *l = NULL;
    const int32_t custom[3] = {-2, 0, 2};
    int32_t vals[8], count = 0;
    double v = 0;
    TH_OK(ctx, tsq_net_create(ctx, 1, shape, &net));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 4, 3, &l));
    TH_OK(ctx, tsq_net_append(net, l));
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_ACT_BITS, 3));
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_EPS, 0.75));
    TH_OK(ctx, tsq_net_set_conversion_option(net, TSQ_NET_TSQ_POSITIONS, 17));
    TH_OK(ctx, tsq_net_tsq_regressor(net, &reg));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_POLISH, 7));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_RESTARTS, 2));
    TH_OK(ctx, tsq_regressor_set_option(reg, TSQ_REGRESSOR_MARGIN, 0.25));
    TH_OK(ctx, tsq_regressor_set_alphabet(reg, custom, 3));
    TH_OK(ctx, tsq_net_clone(net, &copy));
    TH_OK(ctx, tsq_net_get_conversion_option(copy, TSQ_NET_TSQ_ACT_BITS, &v));
    ck_assert(v == 3);
    TH_OK(ctx, tsq_net_get_conversion_option(copy, TSQ_NET_TSQ_EPS, &v));
    ck_assert(v == 0.75);
    TH_OK(ctx, tsq_net_get_conversion_option(copy, TSQ_NET_TSQ_POSITIONS, &v));
    ck_assert(v == 17);
    TH_OK(ctx, tsq_net_get_conversion_option(copy, TSQ_NET_TSQ_SPARSITY, &v));
    ck_assert(v == 0.63);
    TH_OK(ctx, tsq_net_tsq_regressor(copy, &creg));
    ck_assert_ptr_ne(creg, reg);
    TH_OK(ctx, tsq_regressor_get_option(creg, TSQ_REGRESSOR_POLISH, &v));
    ck_assert(v == 7);
    TH_OK(ctx, tsq_regressor_get_option(creg, TSQ_REGRESSOR_RESTARTS, &v));
    ck_assert(v == 2);
    TH_OK(ctx, tsq_regressor_get_option(creg, TSQ_REGRESSOR_MARGIN, &v));
    ck_assert(v == 0.25);
    TH_OK(ctx, tsq_regressor_get_option(creg, TSQ_REGRESSOR_WEIGHT_BITS, &v));
    ck_assert(v == 0); /* a custom alphabet */
    TH_OK(ctx, tsq_regressor_get_alphabet(creg, vals, 8, &count));
    ck_assert(count == 3 && vals[0] == -2 && vals[1] == 0 && vals[2] == 2);
    tsq_net_destroy(copy);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Files                                                                */
/* ------------------------------------------------------------------ */

/* Options the model file holds (every layer's TRAINABLE, a batch norm's
 * momentum, eps and frozen flag, a quantizer's codes output) come back
 * from it, and a loaded layer answers the same keys as the saved one. */
START_TEST(test_model_file_round_trip)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    const int64_t shape[1] = {4};
    tsq_net *net = NULL, *back = NULL;
    tsq_layer *l = NULL, *m = NULL;
    void *buf = NULL;
    uint64_t size = 0;
    int32_t i, n = 0;
    int32_t key;
    TH_OK(ctx, tsq_net_create(ctx, 1, shape, &net));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 4, 4, &l));
    TH_OK(ctx, tsq_net_append(net, l));
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_TRAINABLE, 0));
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 4, &l));
    TH_OK(ctx, tsq_net_append(net, l));
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_BN_MOMENTUM, 0.25));
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_BN_EPS, 1e-3));
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_BN_FROZEN, 1));
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.25f, 0.5f, &l));
    TH_OK(ctx, tsq_net_append(net, l));
    TH_OK(ctx, tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1));
    TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 4, 3, 2, &l));
    TH_OK(ctx, tsq_net_append(net, l));
    TH_OK(ctx, tsq_net_save(net, NULL, 0, &size));
    buf = malloc((size_t)size);
    ck_assert_ptr_nonnull(buf);
    TH_OK(ctx, tsq_net_save(net, buf, size, &size));
    TH_OK(ctx, tsq_net_load(ctx, buf, size, &back));
    TH_OK(ctx, tsq_net_layer_count(back, &n));
    ck_assert_int_eq(n, 4);
    for (i = 0; i < n; i++) {
        TH_OK(ctx, tsq_net_layer(net, i, &l));
        TH_OK(ctx, tsq_net_layer(back, i, &m));
        for (key = TSQ_LAYER_OPT_TRAINABLE; key <= TSQ_LAYER_OPT_AQ_LEARN_DELTA; key++) {
            double a = NAN, b = NAN;
            tsq_status sa = tsq_layer_get_option(l, key, &a);
            tsq_status sb = tsq_layer_get_option(m, key, &b);
            ck_assert_int_eq(sa, sb); /* the same kinds, the same applicable keys */
            ck_assert_msg(sa != TSQ_OK || a == b, "layer %d key 0x%04x: %g saved, %g loaded",
                          (int)i, (unsigned)key, a, b);
        }
    }
    free(buf);
    tsq_net_destroy(back);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* The quantizer's serialized form holds its writable options. */
START_TEST(test_quantizer_blob_round_trip)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_quantizer *q = NULL, *r = NULL;
    unsigned char buf[256];
    uint64_t size = 0;
    int32_t key;
    TH_OK(ctx, tsq_quantizer_create(ctx, 4, 3, &q));
    TH_OK(ctx, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, TSQ_EPS_SPARSITY));
    TH_OK(ctx, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS, 0.125));
    TH_OK(ctx, tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, 0.375));
    TH_OK(ctx, tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 9));
    TH_OK(ctx, tsq_quantizer_save(q, buf, sizeof buf, &size));
    TH_OK(ctx, tsq_quantizer_load(ctx, buf, size, &r));
    for (key = TSQ_QUANTIZER_BITS; key <= TSQ_QUANTIZER_OBSERVED; key++) {
        double a = NAN, b = NAN;
        TH_OK(ctx, tsq_quantizer_get_option(q, key, &a));
        TH_OK(ctx, tsq_quantizer_get_option(r, key, &b));
        ck_assert_msg(a == b, "key 0x%04x: %g saved, %g loaded", (unsigned)key, a, b);
    }
    tsq_quantizer_destroy(r);
    tsq_quantizer_destroy(q);
    th_context_done(ctx, &st);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_every_option);
    tcase_add_test(tc, test_layer_option_scope);
    tcase_add_test(tc, test_net_conversion_options_clone);
    tcase_add_test(tc, test_model_file_round_trip);
    tcase_add_test(tc, test_quantizer_blob_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run(suite());
}
