/*
 * The shares of a fit's channels (tsq_regressor_set_share). Regressors
 * that imported the same summed statistics all hold the same problem per
 * channel; with shares, each solves only its block of the channels in
 * end_pass, and they exchange their results through one array of doubles
 * per pass (tsq_regressor_share_size / export / import, e.g. with
 * MPI_Allgatherv). The import then takes the decisions that need every
 * channel (regressor_pass.c, tsq__reg_conclude), so that every share
 * computes them from the same values and the fit is bit for bit the one
 * that solves every channel itself.
 *
 * What travels is listed in one place, travels(): every per-channel array
 * that a share's solves change and that a later decision, feed or
 * end_pass reads on another share. A missing one would let the shares
 * drift apart, which the share tests (the fit of R regressors against one
 * that solves every channel) see.
 */
#include "regressor_fit.h"

#include <math.h>
#include <string.h>

void tsq__reg_share_range(int64_t C, int32_t s, int32_t shares, int64_t *c0, int64_t *c1)
{
    /* Contiguous blocks: a part is a run of channels, and the parts in
     * share order are the channels in order. */
    *c0 = C * s / shares;
    *c1 = C * (s + 1) / shares;
}

tsq_status tsq__reg_check_no_exchange(const tsq_regressor *reg, const char *where)
{
    TSQ_RETURN_ERROR_IF(reg->fit && reg->fit->exchange, &reg->obj, TSQ_ERR_STATE,
                        "%s: the shares' results of the last pass are not imported yet "
                        "(tsq_regressor_share_export, then tsq_regressor_share_import)",
                        where);
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* What travels                                                        */
/* ------------------------------------------------------------------ */

/* How an element travels (as a double) and what an import accepts. */
enum { AS_F64 = 1, AS_F32, AS_WEIGHT, AS_FLAG };

typedef struct travel {
    void *v;       /* the array, every channel's */
    int32_t as;    /* its element type (AS_*) */
    int64_t per;   /* elements per channel */
    int32_t minor; /* 1: element k of channel c at v[k C + c]; 0: at v[c per + k] */
} travel;

#define MAX_TRAVEL 8

/* The arrays that the solves of `exchange` leave, in the order of a part.
 * Not listed, because no other share reads them: r = M w and w^T M w (only
 * the channel's own solves do; the polish recomputes them for every
 * channel), the sweeps' and restarts' scratch (a round's own). Not listed,
 * because every share computes them from what travels or from the summed
 * statistics: the float copies of w, alpha, b (setup_pass), the best
 * iterate and the history (tsq__reg_record_iterate), the z-step's bins,
 * the polish's histogram ranges, windows, steps and checks. */
static int travels(const fit_state *f, int32_t exchange, travel *t)
{
    int n = 0;
#define TRAVEL(ptr, as_, per_, minor_) \
    (t[n].v = (ptr), t[n].as = (as_), t[n].per = (per_), t[n].minor = (minor_), n++)
    if (exchange == EXCHANGE_ITERATE) {
        /* the start's or a round's solves: the iterate that the next pass
         * evaluates, whether it moved (the early stop), and its linear
         * objective (the relaxed objective of the history) */
        TRAVEL(f->w, AS_WEIGHT, f->d, 0);
        TRAVEL(f->alpha, AS_F64, 1, 0);
        TRAVEL(f->b, AS_F64, 1, 0);
        TRAVEL(f->moved, AS_FLAG, 1, 0);
        TRAVEL(f->lin, AS_F64, 1, 0);
    } else if (exchange == EXCHANGE_CANDIDATES) {
        /* a polish search: the candidates that the next pass checks, as
         * doubles and as the floats evaluated */
        TRAVEL(f->cad, AS_F64, TSQ__POLISH_CAND, 1);
        TRAVEL(f->cbd, AS_F64, TSQ__POLISH_CAND, 1);
        TRAVEL(f->caf, AS_F32, TSQ__POLISH_CAND, 1);
        TRAVEL(f->cbf, AS_F32, TSQ__POLISH_CAND, 1);
    }
#undef TRAVEL
    return n;
}

/* Doubles per channel of the exchange that is due. */
static int64_t per_channel(const fit_state *f)
{
    travel t[MAX_TRAVEL];
    int64_t total = 0;
    int n = travels(f, f->exchange, t), i;
    for (i = 0; i < n; i++)
        total += t[i].per;
    return total;
}

static int64_t part_size(const fit_state *f, int32_t s)
{
    int64_t c0, c1;
    tsq__reg_share_range(f->C, s, f->shares, &c0, &c1);
    return (c1 - c0) * per_channel(f);
}

static double get(const travel *t, int64_t C, int64_t c, int64_t k)
{
    int64_t i = t->minor ? k * C + c : c * t->per + k;
    switch (t->as) {
    case AS_F32:
        return (double)((const float *)t->v)[i];
    case AS_WEIGHT:
    case AS_FLAG:
        return (double)((const int8_t *)t->v)[i];
    default:
        return ((const double *)t->v)[i];
    }
}

static void put(const travel *t, int64_t C, int64_t c, int64_t k, double x)
{
    int64_t i = t->minor ? k * C + c : c * t->per + k;
    switch (t->as) {
    case AS_F32:
        ((float *)t->v)[i] = (float)x;
        break;
    case AS_WEIGHT:
    case AS_FLAG:
        ((int8_t *)t->v)[i] = (int8_t)x;
        break;
    default:
        ((double *)t->v)[i] = x;
    }
}

/* An imported value that the array's type cannot hold: TSQ_ERR_NOT_FINITE
 * or TSQ_ERR_INVALID (with what it should be in *what), else TSQ_OK. */
static tsq_status bad_value(const travel *t, double x, const uint8_t *in_alphabet,
                            const char **what)
{
    if (!isfinite(x))
        return TSQ_ERR_NOT_FINITE;
    if (t->as == AS_WEIGHT && !(x == floor(x) && x >= -128.0 && x <= 127.0 &&
                                in_alphabet[(int32_t)x + 128])) {
        *what = "a weight of the alphabet";
        return TSQ_ERR_INVALID;
    }
    if (t->as == AS_FLAG && x != 0.0 && x != 1.0) {
        *what = "0 or 1";
        return TSQ_ERR_INVALID;
    }
    if (t->as == AS_F32 && (double)(float)x != x) {
        *what = "a float";
        return TSQ_ERR_INVALID;
    }
    return TSQ_OK;
}

/* ------------------------------------------------------------------ */
/* The calls                                                           */
/* ------------------------------------------------------------------ */

tsq_status tsq_regressor_set_share(tsq_regressor *reg, int32_t index, int32_t count)
{
    static const char *where = "regressor_set_share";
    if (!reg)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(count < 1, &reg->obj, TSQ_ERR_INVALID,
                        "%s: count is %d, must be at least 1", where, (int)count);
    TSQ_RETURN_ERROR_IF(index < 0 || index >= count, &reg->obj, TSQ_ERR_INVALID,
                        "%s: index %d is outside 0..%d", where, (int)index, (int)count - 1);
    TSQ_RETURN_ERROR_IF(fit_running(reg) || (reg->fit && reg->fit->exchange), &reg->obj,
                        TSQ_ERR_STATE, "%s: a fit is in progress (the share is read by begin)",
                        where);
    reg->share = index;
    reg->shares = count;
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

static tsq_status exchange_due(const tsq_regressor *reg, const char *where)
{
    TSQ_RETURN_ERROR_IF(!reg->fit || !reg->fit->exchange, &reg->obj, TSQ_ERR_STATE,
                        "%s: no exchange is due (one follows each tsq_regressor_end_pass of "
                        "a fit whose share count is above 1)", where);
    return TSQ_OK;
}

tsq_status tsq_regressor_share_size(const tsq_regressor *reg, int32_t share, int64_t *count)
{
    static const char *where = "regressor_share_size";
    if (!reg)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!count, &reg->obj, TSQ_ERR_NULL, "%s: count is NULL", where);
    TSQ_FORWARD_IF_ERROR(exchange_due(reg, where));
    TSQ_RETURN_ERROR_IF(share < 0 || share >= reg->fit->shares, &reg->obj, TSQ_ERR_INVALID,
                        "%s: share %d is outside 0..%d", where, (int)share,
                        (int)reg->fit->shares - 1);
    *count = part_size(reg->fit, share);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

tsq_status tsq_regressor_share_export(const tsq_regressor *reg, double *out, int64_t count)
{
    static const char *where = "regressor_share_export";
    const fit_state *f;
    travel t[MAX_TRAVEL];
    int64_t size, c, k, pos = 0;
    int n, i;
    if (!reg)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(exchange_due(reg, where));
    f = reg->fit;
    size = part_size(f, f->share);
    TSQ_RETURN_ERROR_IF(count != size, &reg->obj, TSQ_ERR_TOO_SMALL,
                        "%s: count %lld, share %d's part has %lld doubles", where,
                        (long long)count, (int)f->share, (long long)size);
    TSQ_RETURN_ERROR_IF(!out && count > 0, &reg->obj, TSQ_ERR_NULL, "%s: out is NULL", where);
    n = travels(f, f->exchange, t);
    for (i = 0; i < n; i++)
        for (c = f->c0; c < f->c1; c++)
            for (k = 0; k < t[i].per; k++)
                out[pos++] = get(&t[i], f->C, c, k);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

/* Checks every share's part in `in` (parts in share order) before
 * anything is written: each value must fit its array, and this share's
 * own part must be what it solved (else the parts are out of order, or
 * come from fits of other statistics or options). */
static tsq_status check_parts(tsq_regressor *reg, const char *where, const double *in)
{
    const fit_state *f = reg->fit;
    travel t[MAX_TRAVEL];
    uint8_t in_alphabet[256];
    int64_t c0, c1, c, k, pos = 0;
    int32_t s;
    int n = travels(f, f->exchange, t), i;
    memset(in_alphabet, 0, sizeof in_alphabet);
    for (i = 0; i < f->opt.alphabet.count; i++)
        in_alphabet[f->opt.alphabet.values[i] + 128] = 1;
    for (s = 0; s < f->shares; s++) {
        tsq__reg_share_range(f->C, s, f->shares, &c0, &c1);
        for (i = 0; i < n; i++)
            for (c = c0; c < c1; c++)
                for (k = 0; k < t[i].per; k++, pos++) {
                    const char *what = "";
                    tsq_status st = bad_value(&t[i], in[pos], in_alphabet, &what);
                    TSQ_RETURN_ERROR_IF(st == TSQ_ERR_NOT_FINITE, &reg->obj, st,
                                        "%s: element %lld (share %d's part) is NaN or Inf",
                                        where, (long long)pos, (int)s);
                    TSQ_RETURN_ERROR_IF(st != TSQ_OK, &reg->obj, st,
                                        "%s: element %lld (share %d's part) is %g, not %s",
                                        where, (long long)pos, (int)s, in[pos], what);
                    TSQ_RETURN_ERROR_IF(
                        s == f->share && memcmp(&in[pos], &(double){get(&t[i], f->C, c, k)},
                                                sizeof(double)) != 0,
                        &reg->obj, TSQ_ERR_INVALID,
                        "%s: element %lld differs from this regressor's own part (share %d): "
                        "the parts are not in share order, or come from fits of other "
                        "statistics or options", where, (long long)pos, (int)s);
                }
    }
    return TSQ_OK;
}

tsq_status tsq_regressor_share_import(tsq_regressor *reg, const double *in, int64_t count,
                                      int32_t *done)
{
    static const char *where = "regressor_share_import";
    fit_state *f;
    travel t[MAX_TRAVEL];
    int64_t total = 0, c0, c1, c, k, pos = 0;
    int32_t s, exchange;
    int n, i;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    TSQ_RETURN_ERROR_IF(!done, &reg->obj, TSQ_ERR_NULL, "%s: done is NULL", where);
    TSQ_FORWARD_IF_ERROR(exchange_due(reg, where));
    f = reg->fit;
    for (s = 0; s < f->shares; s++)
        total += part_size(f, s);
    TSQ_RETURN_ERROR_IF(count != total, &reg->obj, TSQ_ERR_TOO_SMALL,
                        "%s: count %lld, the %d shares' parts have %lld doubles", where,
                        (long long)count, (int)f->shares, (long long)total);
    TSQ_RETURN_ERROR_IF(!in && count > 0, &reg->obj, TSQ_ERR_NULL, "%s: in is NULL", where);
    TSQ_FORWARD_IF_ERROR(check_parts(reg, where, in));
    n = travels(f, f->exchange, t);
    for (s = 0; s < f->shares; s++) {
        tsq__reg_share_range(f->C, s, f->shares, &c0, &c1);
        for (i = 0; i < n; i++)
            for (c = c0; c < c1; c++)
                for (k = 0; k < t[i].per; k++)
                    put(&t[i], f->C, c, k, in[pos++]);
    }
    exchange = f->exchange;
    f->exchange = EXCHANGE_NONE;
    if (exchange == EXCHANGE_EMPTY) {
        *done = f->exchange_done;
        st = TSQ_OK;
    } else {
        st = tsq__reg_conclude(reg, done); /* every channel's results are in place */
    }
    if (st == TSQ_OK)
        tsq__clear(&reg->obj);
    return st;
}
