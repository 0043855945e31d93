/* Network-level TSQ (TSQ.md "Step 1" and "Step 2"), driven by the caller's
 * batches:
 *
 *  - tsq_net_learn_codes: one pass in eval mode; a tsq_quantizer observes
 *    the input of every selected ReLU (or quantizer layer), then is fitted
 *    and installed as a quantizer layer: the quantizer replaces the ReLU.
 *
 *  - tsq_net_fit_transform: layer by layer ("units"), each fitted by the
 *    net's tsq_regressor over as many passes as it asks for. For unit u
 *    (weight layer L, maybe a batch-norm B after it, maybe a quantizer Q
 *    after that), on every batch:
 *        X = input of L in the net being converted (codes: the quantizer
 *            feeding L is switched to codes output when the unit starts),
 *        P = output of B (or L) in the reference net (a clone of the net
 *            as the session began: the step-1 network), Y = Q's codes of P,
 *    as rows (im2col rows for a convolution). The start W_init is L's
 *    weights with B folded in (s = gamma / sqrt(var + eps)) and multiplied
 *    by the input quantizer's delta per input channel, since the step-1
 *    layer saw k * delta where the low-bit layer sees k:
 *        P = s (W (k delta) + b - mean) + beta = (s W delta) k + b'.
 *    When the regressor is done, L is replaced by a low-bit layer holding
 *    (w, alpha, b) and B is removed: y = alpha (k . w) + b approximates P.
 */
#include "nn_internal.h"

#include "quant/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { OPT_COUNT = 7, HIST_SERIES = 4 };

static const double opt_default[OPT_COUNT] = {0, 2, 0, TSQ_EPS_JOINT, 0.32, 0.63, 0};
static const double opt_lo[OPT_COUNT] = {0, 1, 0, 1, 0, 0, 0};
static const double opt_hi[OPT_COUNT] = {0, 8, 1, 4, 1e30, 1, 1048576};
static const int opt_integral[OPT_COUNT] = {0, 1, 1, 1, 0, 0, 1};

typedef struct {
    int32_t ref_layer, ref_bn, ref_out_quant; /* indices in the reference net (-1: none) */
    int32_t weight_ord;                      /* ordinal among the weight layers */
    int32_t in_quant_ord;                    /* ordinal of the quantizer feeding it, or -1 */
    int32_t passes;
    int finished;
    double *history[HIST_SERIES];
    int32_t nhistory;
} fit_unit;

struct tsq__net_tsq {
    int stage;
    uint64_t generation;
    uint64_t seed;
    /* learn_codes */
    int32_t npos;
    int32_t *pos;
    tsq_quantizer **quant;
    /* fit_transform */
    tsq_net *ref;
    fit_unit *units;
    int32_t nunits, cur;
    int64_t batch_in_pass;
    int restore_loss; /* the regressor's loss option to put back, or 0 */
};

typedef struct tsq__net_tsq session;

/* ------------------------------------------------------------------ */
/* Options, life cycle                                                  */
/* ------------------------------------------------------------------ */

void tsq__net_tsq_init(tsq_net *net)
{
    memcpy(net->tsq_opt, opt_default, sizeof opt_default);
    net->tsq_reg = NULL;
    net->tsq = NULL;
}

static void free_learning(tsq_net *net, session *s)
{
    int32_t i;
    for (i = 0; i < s->npos; i++)
        tsq_quantizer_destroy(s->quant[i]);
    tsq__free(net->obj.ctx, s->quant);
    tsq__free(net->obj.ctx, s->pos);
    s->quant = NULL;
    s->pos = NULL;
    s->npos = 0;
}

static void free_units(tsq_net *net, session *s)
{
    int32_t u, k;
    for (u = 0; u < s->nunits; u++)
        for (k = 0; k < HIST_SERIES; k++)
            tsq__free(net->obj.ctx, s->units[u].history[k]);
    tsq__free(net->obj.ctx, s->units);
    s->units = NULL;
    s->nunits = s->cur = 0;
}

static int is_quant(const tsq_layer *l);
static int32_t find_ordinal(const tsq_net *net, int (*pred)(const tsq_layer *), int32_t ord);

/* Ends a session; finished units' histories stay readable. A unit cut
 * short gets its input quantizer back to values output, since its layer
 * stays in full precision (unless the caller changed the layers, when the
 * ordinals may no longer name the same layers). */
static void end_session(tsq_net *net)
{
    session *s = net->tsq;
    if (!s)
        return;
    if (s->stage == TSQ_NET_TSQ_FITTING && s->cur < s->nunits && !s->units[s->cur].finished &&
        s->units[s->cur].in_quant_ord >= 0 && s->generation == net->generation) {
        int32_t q = find_ordinal(net, is_quant, s->units[s->cur].in_quant_ord);
        if (q >= 0)
            tsq_layer_set_option(net->layers[q], TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 0);
    }
    free_learning(net, s);
    tsq_net_destroy(s->ref);
    s->ref = NULL;
    if (s->restore_loss && net->tsq_reg)
        tsq_regressor_set_param(net->tsq_reg, TSQ_REGRESSOR_LOSS, s->restore_loss);
    s->restore_loss = 0;
    s->stage = TSQ_NET_TSQ_IDLE;
}

void tsq__net_tsq_free(tsq_net *net)
{
    if (net->tsq) {
        end_session(net);
        free_units(net, net->tsq);
        tsq__free(net->obj.ctx, net->tsq);
        net->tsq = NULL;
    }
    tsq_regressor_destroy(net->tsq_reg);
    net->tsq_reg = NULL;
}

static tsq_status get_regressor(tsq_net *net)
{
    tsq_context *ctx = net->obj.ctx;
    tsq_status st;
    if (net->tsq_reg)
        return TSQ_OK;
    st = tsq_regressor_create(ctx, &net->tsq_reg);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "net: %s", tsq_context_errmsg(ctx));
    return TSQ_OK;
}

tsq_status tsq__net_tsq_copy_settings(tsq_net *dst, const tsq_net *src)
{
    int32_t key, values[256], count = 0;
    double v, w;
    memcpy(dst->tsq_opt, src->tsq_opt, sizeof dst->tsq_opt);
    if (!src->tsq_reg)
        return TSQ_OK;
    if (get_regressor(dst) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    for (key = TSQ_REGRESSOR_WEIGHT_BITS; key <= TSQ_REGRESSOR_MARGIN; key++)
        if (tsq_regressor_get_param(src->tsq_reg, key, &v) == TSQ_OK &&
            !(key == TSQ_REGRESSOR_WEIGHT_BITS && v == 0) &&
            tsq_regressor_get_param(dst->tsq_reg, key, &w) == TSQ_OK && v != w)
            tsq_regressor_set_param(dst->tsq_reg, key, v);
    if (tsq_regressor_get_param(src->tsq_reg, TSQ_REGRESSOR_WEIGHT_BITS, &v) == TSQ_OK && v == 0 &&
        tsq_regressor_get_alphabet(src->tsq_reg, values, 256, &count) == TSQ_OK)
        tsq_regressor_set_alphabet(dst->tsq_reg, values, count);
    return TSQ_OK;
}

static int running(const tsq_net *net)
{
    return net->tsq && net->tsq->stage != TSQ_NET_TSQ_IDLE;
}

tsq_status tsq_net_tsq_option_bounds(int32_t key, double *lo, double *hi)
{
    if (!lo || !hi)
        return TSQ_ERR_NULL;
    if (key < 1 || key >= OPT_COUNT)
        return TSQ_ERR_INVALID;
    *lo = opt_lo[key];
    *hi = opt_hi[key];
    return TSQ_OK;
}

tsq_status tsq_net_set_tsq_option(tsq_net *net, int32_t key, double value)
{
    static const char *where = "net_set_tsq_option";
    if (!net)
        return TSQ_ERR_NULL;
    if (key < 1 || key >= OPT_COUNT)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: unknown key %d", where, (int)key);
    if (!(value >= opt_lo[key] && value <= opt_hi[key]) ||
        (opt_integral[key] && value != floor(value)))
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: value %g of key %d is outside [%g, %g]%s",
                         where, value, (int)key, opt_lo[key], opt_hi[key],
                         opt_integral[key] ? " or not integral" : "");
    if (running(net))
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: a TSQ session is running", where);
    net->tsq_opt[key] = value;
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_get_tsq_option(const tsq_net *net, int32_t key, double *value)
{
    if (!net || !value)
        return TSQ_ERR_NULL;
    if (key < 1 || key >= OPT_COUNT)
        return tsq__fail((tsq__object *)&net->obj, TSQ_ERR_INVALID,
                         "net_get_tsq_option: unknown key %d", (int)key);
    *value = net->tsq_opt[key];
    return TSQ_OK;
}

tsq_status tsq_net_tsq_regressor(tsq_net *net, tsq_regressor **reg)
{
    tsq_status st;
    if (!net || !reg)
        return TSQ_ERR_NULL;
    st = get_regressor(net);
    if (st == TSQ_OK)
        *reg = net->tsq_reg;
    return st;
}

tsq_status tsq_net_tsq_cancel(tsq_net *net)
{
    if (!net)
        return TSQ_ERR_NULL;
    end_session(net);
    tsq__clear(&net->obj);
    return TSQ_OK;
}

tsq_status tsq_net_tsq_progress(const tsq_net *net, int32_t *stage, int32_t *unit,
                                int32_t *units, int32_t *passes)
{
    const session *s;
    if (!net)
        return TSQ_ERR_NULL;
    s = net->tsq;
    if (stage)
        *stage = s ? s->stage : TSQ_NET_TSQ_IDLE;
    if (unit)
        *unit = s ? s->cur : 0;
    if (units)
        *units = s ? s->nunits : 0;
    if (passes)
        *passes = s && s->cur < s->nunits ? s->units[s->cur].passes : 0;
    return TSQ_OK;
}

tsq_status tsq_net_tsq_history(const tsq_net *net, int32_t unit, int32_t series, double *values,
                               int32_t capacity, int32_t *count, int32_t *layer_index)
{
    tsq__object *obj;
    const fit_unit *u;
    if (!net || !count)
        return TSQ_ERR_NULL;
    obj = (tsq__object *)&net->obj;
    if (!net->tsq || unit < 0 || unit >= net->tsq->nunits)
        return tsq__fail(obj, TSQ_ERR_INVALID, "net_tsq_history: no converted layer %d", (int)unit);
    if (series < TSQ_HISTORY_OBJECTIVE || series > TSQ_HISTORY_LAMBDA)
        return tsq__fail(obj, TSQ_ERR_INVALID, "net_tsq_history: unknown series %d", (int)series);
    u = &net->tsq->units[unit];
    if (!u->finished)
        return tsq__fail(obj, TSQ_ERR_STATE, "net_tsq_history: layer %d is not converted yet",
                         (int)unit);
    *count = u->nhistory;
    if (layer_index)
        *layer_index = u->ref_layer;
    if (!values)
        return TSQ_OK;
    if (capacity < u->nhistory)
        return tsq__fail(obj, TSQ_ERR_TOO_SMALL, "net_tsq_history: capacity %d < %d",
                         (int)capacity, (int)u->nhistory);
    memcpy(values, u->history[series - 1], (size_t)u->nhistory * sizeof(double));
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* Shared helpers                                                       */
/* ------------------------------------------------------------------ */

static int is_weight(const tsq_layer *l)
{
    return tsq__layer_is(l, TSQ_LAYER_DENSE) || tsq__layer_is(l, TSQ_LAYER_CONV2D) ||
           tsq__layer_is_lowbit(l);
}

/* Index of the ord-th layer that `pred` accepts, or -1. */
static int32_t find_ordinal(const tsq_net *net, int (*pred)(const tsq_layer *), int32_t ord)
{
    int32_t i, k = 0;
    for (i = 0; i < net->nlayers; i++)
        if (pred(net->layers[i]) && k++ == ord)
            return i;
    return -1;
}

static int32_t ordinal_of(const tsq_net *net, int (*pred)(const tsq_layer *), int32_t index)
{
    int32_t i, k = 0;
    for (i = 0; i < index; i++)
        k += pred(net->layers[i]) != 0;
    return k;
}

static tsq_status new_session(tsq_net *net, int stage)
{
    if (!net->tsq) {
        net->tsq = tsq__calloc(net->obj.ctx, 1, sizeof *net->tsq);
        if (!net->tsq)
            return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "net: out of memory");
    }
    free_units(net, net->tsq);
    net->tsq->stage = stage;
    net->tsq->generation = net->generation;
    net->tsq->seed = net->obj.ctx->seed;
    net->tsq->batch_in_pass = 0;
    return TSQ_OK;
}

/* Entry checks: arguments, and that no other session runs and the net did
 * not change under this one. */
static tsq_status enter(tsq_net *net, const char *where, int stage, const tsq_tensor *x,
                        int32_t last, int32_t *done)
{
    if (!x || !done)
        return tsq__fail(&net->obj, TSQ_ERR_NULL, "%s: %s is NULL", where, x ? "done" : "x");
    if (last != 0 && last != 1)
        return tsq__fail(&net->obj, TSQ_ERR_INVALID, "%s: last is %d, must be 0 or 1", where,
                         (int)last);
    if (!running(net))
        return TSQ_OK;
    if (net->tsq->stage != stage)
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: a %s session is running", where,
                         net->tsq->stage == TSQ_NET_TSQ_LEARNING ? "learn_codes" : "fit_transform");
    if (net->tsq->generation != net->generation) {
        end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_STATE,
                         "%s: the net's layers changed during the session; it is cancelled", where);
    }
    return TSQ_OK;
}

/* A borrowed f32 tensor (n, sample shape) over activation memory. */
static tsq_status wrap_batch(tsq_net *net, const char *where, float *data, int64_t n,
                             int32_t ndim, const int64_t *shape, tsq_tensor **t)
{
    tsq_context *ctx = net->obj.ctx;
    int64_t full[4], numel = n;
    int32_t i;
    tsq_status st;
    full[0] = n;
    for (i = 0; i < ndim; i++) {
        full[i + 1] = shape[i];
        numel *= shape[i];
    }
    st = tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, ndim + 1, full, data, (uint64_t)numel * 4, t);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    return TSQ_OK;
}

/* Runs `target` on x up to layer `upto` (exclusive), eval mode. */
static tsq_status run_prefix(tsq_net *target, tsq_net *net, const char *where,
                             const tsq_tensor *x, int64_t n, int32_t upto)
{
    tsq_status st = tsq__net_reserve(target, n);
    if (st == TSQ_OK) {
        memcpy(target->act[0], x->data, (size_t)(n * target->in_numel) * sizeof(float));
        st = tsq__net_run(target, upto, n, 0);
    }
    if (st != TSQ_OK && target != net)
        return tsq__fail(&net->obj, st, "%s: step-1 net: %s", where, target->obj.msg);
    return st;
}

/* ------------------------------------------------------------------ */
/* Step 1: learn codes                                                  */
/* ------------------------------------------------------------------ */

static int is_position(const tsq_layer *l)
{
    return (tsq__layer_is(l, TSQ_LAYER_RELU) || tsq__layer_is_act_quant(l)) &&
           l->tsq_select != 0;
}

static tsq_status begin_learning(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    session *s;
    int32_t i, n = 0;
    tsq_status st = new_session(net, TSQ_NET_TSQ_LEARNING);
    if (st != TSQ_OK)
        return st;
    s = net->tsq;
    for (i = 0; i < net->nlayers; i++)
        n += is_position(net->layers[i]);
    if (n == 0) {
        end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_STATE, "%s: no ReLU or quantizer layer is selected",
                         where);
    }
    s->pos = tsq__calloc(ctx, (size_t)n, sizeof *s->pos);
    s->quant = tsq__calloc(ctx, (size_t)n, sizeof *s->quant);
    if (!s->pos || !s->quant) {
        end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    for (i = 0; i < net->nlayers; i++) {
        tsq_layer *l = net->layers[i];
        int64_t channels = net->tsq_opt[TSQ_NET_TSQ_PER_CHANNEL] != 0 ? l->in_shape[0] : 0;
        tsq_quantizer *q = NULL;
        if (!is_position(l))
            continue;
        st = tsq_quantizer_create(ctx, (int32_t)net->tsq_opt[TSQ_NET_TSQ_ACT_BITS], channels, &q);
        if (st == TSQ_OK) {
            s->pos[s->npos] = i;
            s->quant[s->npos++] = q;
            st = tsq_quantizer_set_param(q, TSQ_QUANTIZER_EPS_MODE, net->tsq_opt[TSQ_NET_TSQ_EPS_MODE]);
        }
        if (st == TSQ_OK)
            st = tsq_quantizer_set_param(q, TSQ_QUANTIZER_EPS, net->tsq_opt[TSQ_NET_TSQ_EPS]);
        if (st == TSQ_OK)
            st = tsq_quantizer_set_param(q, TSQ_QUANTIZER_SPARSITY,
                                         net->tsq_opt[TSQ_NET_TSQ_SPARSITY]);
        if (st != TSQ_OK) {
            tsq__fail(&net->obj, st, "%s: quantizer for layer %d: %s", where, (int)i,
                      q ? tsq_quantizer_errmsg(q) : tsq_context_errmsg(ctx));
            end_session(net);
            return st;
        }
    }
    return TSQ_OK;
}

/* Adds one batch to every quantizer, or to none: the documentation promises
 * that a failed call does not count the batch. So every allocation and the
 * finiteness check come before the first observation; the only allocation
 * left, the histograms made by each quantizer's first observation, happens
 * on the session's first batch, where a failure is undone by clearing the
 * quantizers that already observed it. */
static tsq_status observe_batch(tsq_net *net, const char *where, const tsq_tensor *x)
{
    tsq_context *ctx = net->obj.ctx;
    session *s = net->tsq;
    tsq_tensor **t = NULL;
    int64_t n;
    int32_t i, j;
    tsq_status st = tsq__net_check_input(net, where, x, &n);
    if (st == TSQ_OK)
        st = run_prefix(net, net, where, x, n, s->pos[s->npos - 1]);
    if (st == TSQ_OK && !(t = tsq__calloc(ctx, (size_t)s->npos, sizeof *t)))
        st = tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    for (i = 0; st == TSQ_OK && i < s->npos; i++) {
        const tsq_layer *l = net->layers[s->pos[i]];
        st = wrap_batch(net, where, net->act[s->pos[i]], n, l->in_ndim, l->in_shape, &t[i]);
        if (st == TSQ_OK && !tsq__all_finite(net->act[s->pos[i]], t[i]->numel))
            st = tsq__fail(&net->obj, TSQ_ERR_NOT_FINITE,
                           "%s: layer %d: its input holds NaN or Inf", where, (int)s->pos[i]);
    }
    for (i = 0; st == TSQ_OK && i < s->npos; i++)
        if ((st = tsq_quantizer_observe(s->quant[i], t[i])) != TSQ_OK) {
            tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)s->pos[i],
                      tsq_quantizer_errmsg(s->quant[i]));
            for (j = 0; j < i && s->batch_in_pass == 0; j++)
                tsq_quantizer_reset(s->quant[j]);
        }
    if (st == TSQ_OK)
        s->batch_in_pass++; /* batches observed in this session */
    for (i = 0; t && i < s->npos; i++)
        tsq_tensor_destroy(t[i]);
    tsq__free(ctx, t);
    return st;
}

/* Copies a fitted quantizer's parameters into an existing quantizer layer. */
static tsq_status refit_layer(tsq_layer *l, const tsq_quantizer *q)
{
    double bits = 0, channels = 0;
    float eps, delta;
    int64_t c;
    tsq_status st;
    tsq_quantizer_get_param(q, TSQ_QUANTIZER_BITS, &bits);
    tsq_quantizer_get_param(q, TSQ_QUANTIZER_CHANNELS, &channels);
    if (channels == 0) {
        st = tsq_quantizer_get_channel(q, 0, &eps, &delta);
        return st == TSQ_OK ? tsq_layer_act_quant_set_channel(l, -1, 0, (int32_t)bits, eps, delta)
                            : st;
    }
    for (c = 0; c < (int64_t)channels; c++) {
        st = tsq_quantizer_get_channel(q, c, &eps, &delta);
        if (st == TSQ_OK)
            st = tsq_layer_act_quant_set_channel(l, c, (int64_t)channels, (int32_t)bits, eps, delta);
        if (st != TSQ_OK)
            return st;
    }
    return TSQ_OK;
}

static tsq_status finish_learning(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    session *s = net->tsq;
    tsq_layer **fresh;
    tsq_status st = TSQ_OK;
    int32_t i;
    for (i = 0; i < s->npos && st == TSQ_OK; i++)
        if ((st = tsq_quantizer_fit(s->quant[i])) != TSQ_OK)
            return tsq__fail(&net->obj, st, "%s: fitting the quantizer of layer %d: %s", where,
                             (int)s->pos[i], tsq_quantizer_errmsg(s->quant[i]));
    /* New layers first, so that running out of memory changes nothing. */
    fresh = tsq__calloc(ctx, (size_t)s->npos, sizeof *fresh);
    if (!fresh)
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    for (i = 0; i < s->npos && st == TSQ_OK; i++)
        if (tsq__layer_is(net->layers[s->pos[i]], TSQ_LAYER_RELU))
            if ((st = tsq_layer_act_quant_create_from(ctx, s->quant[i], &fresh[i])) != TSQ_OK)
                tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    for (i = 0; i < s->npos && st == TSQ_OK; i++) {
        tsq_layer *l = net->layers[s->pos[i]];
        if (fresh[i]) {
            st = tsq__net_replace(net, where, s->pos[i], fresh[i]);
            if (st == TSQ_OK)
                fresh[i] = NULL;
        } else if ((st = refit_layer(l, s->quant[i])) != TSQ_OK) {
            tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)s->pos[i],
                      tsq_layer_errmsg(l));
        }
    }
    for (i = 0; i < s->npos; i++)
        tsq_layer_destroy(fresh[i]);
    tsq__free(ctx, fresh);
    return st;
}

tsq_status tsq_net_learn_codes(tsq_net *net, const tsq_tensor *x, int32_t last, int32_t *done)
{
    static const char *where = "net_learn_codes";
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    st = enter(net, where, TSQ_NET_TSQ_LEARNING, x, last, done);
    if (st != TSQ_OK)
        return st;
    *done = 0;
    if (!running(net) && (st = begin_learning(net, where)) != TSQ_OK)
        return st;
    st = observe_batch(net, where, x);
    if (st == TSQ_OK && last) {
        st = finish_learning(net, where);
        end_session(net);
        if (st == TSQ_OK)
            *done = 1;
    }
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}

/* ------------------------------------------------------------------ */
/* Step 2: fit transform                                                */
/* ------------------------------------------------------------------ */

static int is_quant(const tsq_layer *l)
{
    return tsq__layer_is_act_quant(l);
}

/* The quantizer whose codes reach layer i unchanged (through max-pools and
 * flattens only), or -1. */
static int32_t feeding_quantizer(const tsq_net *net, int32_t i)
{
    for (i = i - 1; i >= 0; i--) {
        const tsq_layer *l = net->layers[i];
        if (tsq__layer_is_act_quant(l))
            return i;
        if (!tsq__layer_is(l, TSQ_LAYER_MAXPOOL2D) && !tsq__layer_is(l, TSQ_LAYER_FLATTEN))
            return -1;
    }
    return -1;
}

static tsq_status begin_fitting(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    session *s;
    int32_t i, first = -1, lastw = -1, n = 0;
    tsq_status st;
    for (i = 0; i < net->nlayers; i++)
        if (is_weight(net->layers[i])) {
            if (first < 0)
                first = i;
            lastw = i;
        }
    st = get_regressor(net);
    if (st == TSQ_OK)
        st = new_session(net, TSQ_NET_TSQ_FITTING);
    if (st != TSQ_OK)
        return st;
    s = net->tsq;
    for (i = 0; i < net->nlayers; i++) {
        const tsq_layer *l = net->layers[i];
        int sel = l->tsq_select;
        if (!tsq__layer_is(l, TSQ_LAYER_DENSE) && !tsq__layer_is(l, TSQ_LAYER_CONV2D))
            continue;
        if (sel == 1 || (sel == -1 && i != first && i != lastw))
            n++;
    }
    if (n == 0) {
        end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_STATE,
                         "%s: no dense or conv2d layer is selected for conversion (by default "
                         "the first and the last stay in full precision)", where);
    }
    s->units = tsq__calloc(ctx, (size_t)n, sizeof *s->units);
    if (!s->units) {
        end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    for (i = 0; i < net->nlayers; i++) {
        const tsq_layer *l = net->layers[i];
        fit_unit *u;
        int32_t next, q;
        if ((!tsq__layer_is(l, TSQ_LAYER_DENSE) && !tsq__layer_is(l, TSQ_LAYER_CONV2D)) ||
            !(l->tsq_select == 1 || (l->tsq_select == -1 && i != first && i != lastw)))
            continue;
        u = &s->units[s->nunits++];
        u->ref_layer = i;
        u->weight_ord = ordinal_of(net, is_weight, i);
        next = i + 1;
        u->ref_bn = -1;
        if (next < net->nlayers && tsq__layer_is(net->layers[next], TSQ_LAYER_BATCHNORM))
            u->ref_bn = next++;
        u->ref_out_quant = next < net->nlayers && is_quant(net->layers[next]) ? next : -1;
        q = feeding_quantizer(net, i);
        u->in_quant_ord = q >= 0 ? ordinal_of(net, is_quant, q) : -1;
    }
    st = tsq_net_clone(net, &s->ref);
    if (st != TSQ_OK) {
        end_session(net);
        return st;
    }
    return TSQ_OK;
}

/* Per-input-column delta of the quantizer feeding a unit's layer (1 when
 * no quantizer feeds it: the regressor then sees the float input). */
static float column_delta(const tsq_layer *q, const tsq_layer *l, int64_t col)
{
    int32_t bits;
    float eps, delta;
    int64_t c = 0, nch;
    if (!q)
        return 1.0f;
    nch = tsq__act_quant_nchannels(q);
    if (nch > 0) {
        if (tsq__layer_is(l, TSQ_LAYER_CONV2D)) {
            const tsq__conv_geom *g = tsq__conv2d_geom(l);
            c = col / (g->kh * g->kw);
        } else {
            c = col / (l->in_numel / nch);
        }
    }
    tsq__act_quant_channel(q, c, &bits, &eps, &delta);
    return delta;
}

/* W_init (d x C): the weights with the batch-norm folded in, in code units. */
static tsq_status initial_weights(tsq_net *net, const char *where, const fit_unit *u,
                                  int64_t d, int64_t C, tsq_tensor **out)
{
    tsq_context *ctx = net->obj.ctx;
    tsq_net *ref = net->tsq->ref;
    const tsq_layer *l = ref->layers[u->ref_layer];
    const tsq_layer *q = NULL;
    const float *w = tsq__param_data(l, 0);
    int64_t shape[2] = {d, C}, c, j;
    float *s, *W;
    tsq_status st;
    if (u->in_quant_ord >= 0)
        q = ref->layers[find_ordinal(ref, is_quant, u->in_quant_ord)];
    st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape, out);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    s = tsq__alloc(ctx, (size_t)(2 * C) * sizeof(float));
    if (!s) {
        tsq_tensor_destroy(*out);
        *out = NULL;
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    if (u->ref_bn >= 0) {
        tsq__batchnorm_eval_affine(ref->layers[u->ref_bn], s, s + C);
    } else {
        for (c = 0; c < C; c++)
            s[c] = 1.0f;
    }
    W = (*out)->data;
    for (j = 0; j < d; j++) {
        float dj = column_delta(q, l, j);
        for (c = 0; c < C; c++)
            W[j * C + c] = s[c] * w[c * d + j] * dj;
    }
    tsq__free(ctx, s);
    return TSQ_OK;
}

/* Gives the regressor the unit's output quantizer (or the linear loss). */
static tsq_status set_output_quantizer(tsq_net *net, const char *where, const fit_unit *u,
                                       int64_t C)
{
    tsq_context *ctx = net->obj.ctx;
    tsq_regressor *reg = net->tsq_reg;
    const tsq_layer *q;
    int32_t bits, b;
    float eps, delta;
    int64_t nch, c;
    tsq_quantizer *tq = NULL;
    tsq_status st;
    double loss;
    if (u->ref_out_quant < 0) {
        tsq_regressor_get_param(reg, TSQ_REGRESSOR_LOSS, &loss);
        net->tsq->restore_loss = (int)loss;
        st = tsq_regressor_set_param(reg, TSQ_REGRESSOR_LOSS, TSQ_LOSS_LINEAR);
        return st == TSQ_OK ? st : tsq__fail(&net->obj, st, "%s: %s", where, tsq_regressor_errmsg(reg));
    }
    q = net->tsq->ref->layers[u->ref_out_quant];
    nch = tsq__act_quant_nchannels(q);
    tsq__act_quant_channel(q, 0, &bits, &eps, &delta);
    if (nch == 0) {
        st = tsq_regressor_set_levels(reg, bits, eps, delta);
        return st == TSQ_OK ? st : tsq__fail(&net->obj, st, "%s: %s", where, tsq_regressor_errmsg(reg));
    }
    if (nch != C)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE, "%s: a quantizer of %lld channels after %lld",
                         where, (long long)nch, (long long)C);
    st = tsq_quantizer_create(ctx, bits, nch, &tq);
    for (c = 0; st == TSQ_OK && c < nch; c++) {
        tsq__act_quant_channel(q, c, &b, &eps, &delta);
        if (b != bits) {
            tsq_quantizer_destroy(tq);
            return tsq__fail(&net->obj, TSQ_ERR_UNSUPPORTED,
                             "%s: the quantizer at layer %d mixes %d- and %d-bit channels", where,
                             (int)u->ref_out_quant, (int)bits, (int)b);
        }
        st = tsq_quantizer_set_channel(tq, c, eps, delta);
    }
    if (st == TSQ_OK)
        st = tsq_regressor_set_quantizer(reg, tq);
    if (st != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: output quantizer: %s", where,
                  tq ? tsq_regressor_errmsg(reg) : tsq_context_errmsg(ctx));
    tsq_quantizer_destroy(tq);
    return st;
}

static void layer_dims(const tsq_layer *l, int64_t *d, int64_t *C)
{
    if (tsq__layer_is(l, TSQ_LAYER_CONV2D)) {
        const tsq__conv_geom *g = tsq__conv2d_geom(l);
        *d = g->k;
        *C = g->cout;
    } else {
        *d = l->in_numel;
        *C = l->out_numel;
    }
}

static tsq_status start_unit(tsq_net *net, const char *where)
{
    session *s = net->tsq;
    fit_unit *u = &s->units[s->cur];
    const tsq_layer *l = s->ref->layers[u->ref_layer];
    tsq_tensor *W = NULL;
    int64_t d, C;
    tsq_status st;
    layer_dims(l, &d, &C);
    if (s->restore_loss) {
        tsq_regressor_set_param(net->tsq_reg, TSQ_REGRESSOR_LOSS, s->restore_loss);
        s->restore_loss = 0;
    }
    st = set_output_quantizer(net, where, u, C);
    if (st == TSQ_OK)
        st = initial_weights(net, where, u, d, C, &W);
    if (st == TSQ_OK && (st = tsq_regressor_begin(net->tsq_reg, d, C, W, 1)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)u->ref_layer,
                  tsq_regressor_errmsg(net->tsq_reg));
    tsq_tensor_destroy(W);
    if (st == TSQ_OK && u->in_quant_ord >= 0) {
        /* From now on the layer's input is codes. */
        tsq_layer *q = net->layers[find_ordinal(net, is_quant, u->in_quant_ord)];
        tsq_layer_set_option(q, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1);
    }
    s->batch_in_pass = 0;
    return st;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* npos distinct positions out of total for each of n images; the same for
 * the same (seed, unit, batch index), so every pass sees the same rows. */
static void sample_positions(const session *s, int64_t n, int64_t total, int64_t npos,
                             int64_t *pos, int64_t *perm)
{
    tsq__rng rng;
    int64_t i, k;
    tsq__rng_seed(&rng, s->seed, ((uint64_t)s->cur << 40) + (uint64_t)s->batch_in_pass);
    for (i = 0; i < n; i++) {
        for (k = 0; k < total; k++)
            perm[k] = k;
        for (k = 0; k < npos; k++) {
            int64_t j = k + (int64_t)tsq__rng_below(&rng, (uint64_t)(total - k)), t = perm[k];
            perm[k] = perm[j];
            perm[j] = t;
        }
        memcpy(pos + i * npos, perm, (size_t)npos * sizeof(int64_t));
        qsort(pos + i * npos, (size_t)npos, sizeof(int64_t), cmp_i64);
    }
}

/* The layer input as u8 codes (exact: the values are integer codes). */
static tsq_status codes_tensor(tsq_net *net, const char *where, const float *a, int64_t n,
                               const tsq_layer *l, tsq_tensor **out)
{
    tsq_context *ctx = net->obj.ctx;
    int64_t shape[4], i, numel = n * l->in_numel;
    int32_t k;
    uint8_t *c;
    tsq_status st;
    shape[0] = n;
    for (k = 0; k < l->in_ndim; k++)
        shape[k + 1] = l->in_shape[k];
    st = tsq_tensor_create(ctx, TSQ_DTYPE_U8, l->in_ndim + 1, shape, out);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    c = (*out)->data;
    for (i = 0; i < numel; i++)
        c[i] = (uint8_t)a[i];
    return TSQ_OK;
}

/* Y rows: the reference quantizer's codes of the P rows (rows x C). */
static tsq_status y_rows(tsq_net *net, const char *where, const fit_unit *u, const tsq_tensor *P,
                         tsq_tensor **out)
{
    tsq_context *ctx = net->obj.ctx;
    const tsq_layer *q = net->tsq->ref->layers[u->ref_out_quant];
    int64_t rows = P->shape[0], C = P->shape[1], r, c;
    const float *p = P->data;
    uint8_t *y;
    tsq_status st = tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, P->shape, out);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    y = (*out)->data;
    for (c = 0; c < C; c++) {
        int32_t bits;
        float eps, delta, inv;
        tsq__act_quant_channel(q, c, &bits, &eps, &delta);
        inv = 1.0f / delta;
        for (r = 0; r < rows; r++)
            y[r * C + c] = (uint8_t)tsq__quant_code(p[r * C + c], eps, inv, (1 << bits) - 1);
    }
    return TSQ_OK;
}

/* X, P and Y rows of one batch for the current unit. */
static tsq_status unit_rows(tsq_net *net, const char *where, const tsq_tensor *x, int64_t n,
                            tsq_tensor **X, tsq_tensor **P, tsq_tensor **Y)
{
    tsq_context *ctx = net->obj.ctx;
    session *s = net->tsq;
    const fit_unit *u = &s->units[s->cur];
    tsq_net *ref = s->ref;
    const tsq_layer *rl = ref->layers[u->ref_layer];
    int32_t li = find_ordinal(net, is_weight, u->weight_ord);
    int32_t pidx = u->ref_bn >= 0 ? u->ref_bn : u->ref_layer;
    const tsq_layer *pl = ref->layers[pidx];
    tsq_tensor *in = NULL, *pt = NULL;
    int64_t *positions = NULL, *perm = NULL, npos = (int64_t)net->tsq_opt[TSQ_NET_TSQ_POSITIONS];
    int conv = tsq__layer_is(rl, TSQ_LAYER_CONV2D);
    tsq_status st;
    *X = *P = *Y = NULL;
    st = run_prefix(net, net, where, x, n, li);
    if (st == TSQ_OK)
        st = run_prefix(ref, net, where, x, n, pidx + 1);
    if (st != TSQ_OK)
        return st;
    if (u->in_quant_ord >= 0)
        st = codes_tensor(net, where, net->act[li], n, rl, &in);
    else
        st = wrap_batch(net, where, net->act[li], n, rl->in_ndim, rl->in_shape, &in);
    if (st == TSQ_OK)
        st = wrap_batch(net, where, ref->act[pidx + 1], n, pl->out_ndim, pl->out_shape, &pt);
    if (st == TSQ_OK && conv) {
        const tsq__conv_geom *g = tsq__conv2d_geom(rl);
        if (npos <= 0 || npos >= g->ohw) {
            npos = 0;
        } else {
            positions = tsq__alloc(ctx, (size_t)(n * npos) * sizeof(int64_t));
            perm = tsq__alloc(ctx, (size_t)g->ohw * sizeof(int64_t));
            if (!positions || !perm)
                st = tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
            else
                sample_positions(s, n, g->ohw, npos, positions, perm);
        }
        if (st == TSQ_OK)
            st = tsq_im2col_rows(ctx, in, (int32_t)g->kh, (int32_t)g->kw, (int32_t)g->stride,
                                 (int32_t)g->stride, (int32_t)g->pad, (int32_t)g->pad, positions,
                                 npos, X);
        if (st == TSQ_OK)
            st = tsq_im2col_output_rows(ctx, pt, positions, npos, P);
        if (st != TSQ_OK)
            tsq__fail(&net->obj, st, "%s: rows: %s", where, tsq_context_errmsg(ctx));
    } else if (st == TSQ_OK) {
        /* Dense: the batch itself, seen as N x d and N x C. */
        int64_t xs[2] = {n, rl->in_numel}, ps[2] = {n, rl->out_numel};
        st = tsq_tensor_reshape(in, 2, xs);
        if (st == TSQ_OK)
            st = tsq_tensor_reshape(pt, 2, ps);
        if (st == TSQ_OK) {
            *X = in;
            *P = pt;
            in = pt = NULL;
        }
    }
    if (st == TSQ_OK && u->ref_out_quant >= 0)
        st = y_rows(net, where, u, *P, Y);
    tsq__free(ctx, positions);
    tsq__free(ctx, perm);
    tsq_tensor_destroy(in);
    tsq_tensor_destroy(pt);
    if (st != TSQ_OK) {
        tsq_tensor_destroy(*X);
        tsq_tensor_destroy(*P);
        tsq_tensor_destroy(*Y);
        *X = *P = *Y = NULL;
    }
    return st;
}

static int32_t regressor_weight_bits(tsq_regressor *reg)
{
    double v = 2;
    int32_t values[256], count = 0, i, m = 1, bits = 2;
    tsq_regressor_get_param(reg, TSQ_REGRESSOR_WEIGHT_BITS, &v);
    if (v >= 2)
        return (int32_t)v;
    if (tsq_regressor_get_alphabet(reg, values, 256, &count) == TSQ_OK)
        for (i = 0; i < count; i++)
            m = abs(values[i]) > m ? abs(values[i]) : m;
    while (bits < 8 && (1 << (bits - 1)) - 1 < m)
        bits++;
    return bits;
}

static tsq_status keep_history(tsq_net *net, fit_unit *u)
{
    int32_t k, n = 0;
    tsq_regressor_history(net->tsq_reg, TSQ_HISTORY_OBJECTIVE, NULL, 0, &n);
    for (k = 0; k < HIST_SERIES; k++) {
        u->history[k] = tsq__alloc(net->obj.ctx, (size_t)(n > 0 ? n : 1) * sizeof(double));
        if (!u->history[k])
            return TSQ_ERR_NO_MEMORY;
        if (n > 0)
            tsq_regressor_history(net->tsq_reg, k + 1, u->history[k], n, &n);
    }
    u->nhistory = n;
    return TSQ_OK;
}

/* The regressor is done: the unit's layer becomes a low-bit layer. */
static tsq_status finish_unit(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    session *s = net->tsq;
    fit_unit *u = &s->units[s->cur];
    const tsq_layer *rl = s->ref->layers[u->ref_layer];
    int32_t li = find_ordinal(net, is_weight, u->weight_ord), bits;
    int64_t d, C, wshape[2], cshape[2], vshape[1], c, j;
    tsq_tensor *W = NULL, *codes = NULL, *alpha = NULL, *b = NULL;
    tsq_layer *nl = NULL;
    tsq_status st;
    layer_dims(rl, &d, &C);
    wshape[0] = d;
    wshape[1] = C;
    cshape[0] = C;
    cshape[1] = d;
    vshape[0] = C;
    bits = regressor_weight_bits(net->tsq_reg);
    st = tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, wshape, &W);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, cshape, &codes);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vshape, &alpha);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vshape, &b);
    if (st != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    if (st == TSQ_OK && (st = tsq_regressor_result(net->tsq_reg, W, alpha, b, NULL)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_regressor_errmsg(net->tsq_reg));
    if (st == TSQ_OK) {
        const int8_t *w = W->data;
        int8_t *cd = codes->data;
        for (c = 0; c < C; c++)
            for (j = 0; j < d; j++)
                cd[c * d + j] = w[j * C + c];
        if (tsq__layer_is(rl, TSQ_LAYER_CONV2D)) {
            const tsq__conv_geom *g = tsq__conv2d_geom(rl);
            st = tsq_layer_lowbit_conv2d_create(ctx, g->cin, g->cout, g->kh, g->kw, g->stride,
                                                g->pad, bits, &nl);
        } else {
            st = tsq_layer_lowbit_dense_create(ctx, d, C, bits, &nl);
        }
        if (st != TSQ_OK)
            tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    }
    if (st == TSQ_OK && (st = tsq_layer_lowbit_set(nl, codes, alpha, b)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_layer_errmsg(nl));
    if (st == TSQ_OK && (st = keep_history(net, u)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: out of memory for the regressor history", where);
    if (st == TSQ_OK) {
        nl->trainable = net->layers[li]->trainable;
        st = tsq__net_replace(net, where, li, nl);
    }
    if (st == TSQ_OK) {
        nl = NULL;
        if (u->ref_bn >= 0)
            st = tsq__net_remove(net, li + 1);
    }
    tsq_layer_destroy(nl);
    tsq_tensor_destroy(W);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(b);
    s->generation = net->generation; /* our own change */
    if (st == TSQ_OK)
        u->finished = 1;
    return st;
}

static tsq_status feed_batch(tsq_net *net, const char *where, const tsq_tensor *x, int32_t last,
                             int32_t *done)
{
    session *s = net->tsq;
    tsq_tensor *X = NULL, *P = NULL, *Y = NULL;
    int32_t rdone = 0;
    int64_t n;
    tsq_status st = tsq__net_check_input(net, where, x, &n);
    if (st == TSQ_OK)
        st = unit_rows(net, where, x, n, &X, &P, &Y);
    if (st == TSQ_OK && (st = tsq_regressor_feed(net->tsq_reg, X, Y, P)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)s->units[s->cur].ref_layer,
                  tsq_regressor_errmsg(net->tsq_reg));
    tsq_tensor_destroy(X);
    tsq_tensor_destroy(P);
    tsq_tensor_destroy(Y);
    if (st != TSQ_OK)
        return st;
    s->batch_in_pass++;
    if (!last)
        return TSQ_OK;
    st = tsq_regressor_end_pass(net->tsq_reg, &rdone);
    if (st != TSQ_OK) {
        tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)s->units[s->cur].ref_layer,
                  tsq_regressor_errmsg(net->tsq_reg));
        end_session(net);
        return st;
    }
    s->units[s->cur].passes++;
    s->batch_in_pass = 0;
    if (!rdone)
        return TSQ_OK;
    st = finish_unit(net, where);
    if (st == TSQ_OK && ++s->cur < s->nunits)
        st = start_unit(net, where);
    if (st != TSQ_OK) {
        end_session(net);
        return st;
    }
    if (s->cur == s->nunits) {
        end_session(net);
        *done = 1;
    }
    return TSQ_OK;
}

tsq_status tsq_net_fit_transform(tsq_net *net, const tsq_tensor *x, int32_t last, int32_t *done)
{
    static const char *where = "net_fit_transform";
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    st = enter(net, where, TSQ_NET_TSQ_FITTING, x, last, done);
    if (st != TSQ_OK)
        return st;
    *done = 0;
    if (!running(net)) {
        st = begin_fitting(net, where);
        if (st == TSQ_OK && (st = start_unit(net, where)) != TSQ_OK)
            end_session(net);
        if (st != TSQ_OK)
            return st;
    }
    st = feed_batch(net, where, x, last, done);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}
