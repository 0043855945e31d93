/*
 * The statistics exchange: the current pass's sums as one array of
 * doubles (tsq_regressor_stats_size / export / import), so that processes
 * that each fed a shard can sum them (e.g. with MPI_Allreduce) and all
 * compute the same iterate.
 */
#include "regressor_fit.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Statistics exchange                                                 */
/* ------------------------------------------------------------------ */

/* The pass's sums as a list of segments; the Gram matrix travels as its
 * upper triangle (row by row). */
typedef struct segment {
    double *v;
    int64_t n;
} segment;

static int stats_segments(fit_state *f, segment *seg, int64_t *total)
{
    int ns = 0, i;
    int64_t d = f->d, C = f->C;
    segment *s = seg;
#define SEG(ptr, count) (s[ns].v = (ptr), s[ns].n = (count), ns++)
    SEG(&f->rows, 1);
    if (f->pass == 0) {
        SEG(f->colsum, d);
        SEG(f->gram, d * (d + 1) / 2); /* the upper triangle, see stats_move */
        if (f->target != TARGET_XW) {
            SEG(f->g0, d * C);
            SEG(f->z0sum, C);
            SEG(f->z0sq, C);
        } else if (shifts_xw(f)) {
            SEG(f->ysum, C);
        }
    } else if (f->pstage == POLISH_HIST) {
        SEG(f->hist, C * f->nbins * f->hbins);
    } else if (f->pstage == POLISH_WINDOW) {
        SEG(f->hist, C * f->nw * f->nbins * f->fb);
    } else if (f->pstage) {
        SEG(f->cand, TSQ__POLISH_CAND * C);
    } else {
        SEG(f->obj, C);
        if (f->zpass) {
            SEG(f->g, d * C);
            SEG(f->zsum, C);
            SEG(f->zsq, C);
            SEG(f->zcost, C);
        }
    }
#undef SEG
    *total = 0;
    for (i = 0; i < ns; i++)
        *total += s[i].n;
    return ns;
}

static void move_value(double *v, double *buf, int32_t mode)
{
    if (mode == STATS_EXPORT)
        *buf = *v;
    else if (mode == TSQ_STATS_ADD)
        *v += *buf;
    else
        *v = *buf;
}

/* Moves the sums to or from buf: EXPORT copies out, ADD adds in, REPLACE
 * copies in. */
static void stats_move(fit_state *f, double *buf, int32_t mode)
{
    segment seg[8];
    int64_t total, pos = 0, i, j, d = f->d;
    int ns = stats_segments(f, seg, &total), s;
    for (s = 0; s < ns; s++) {
        if (f->pass == 0 && seg[s].v == f->gram) {
            for (i = 0; i < d; i++)
                for (j = i; j < d; j++)
                    move_value(f->gram + i * d + j, buf + pos++, mode);
        } else {
            for (i = 0; i < seg[s].n; i++)
                move_value(seg[s].v + i, buf + pos++, mode);
        }
    }
}

static tsq_status stats_common(const tsq_regressor *reg, const char *where, int64_t *size)
{
    segment seg[8];
    if (!fit_running(reg))
        return tsq__fail(&reg->obj, TSQ_ERR_STATE, "%s: no pass in progress",
                         where);
    TSQ_FORWARD_IF_ERROR(tsq__reg_check_no_exchange(reg, where));
    stats_segments(reg->fit, seg, size); /* reads only */
    return TSQ_OK;
}

tsq_status tsq_regressor_stats_size(const tsq_regressor *reg, int64_t *count)
{
    if (!reg)
        return TSQ_ERR_NULL;
    if (!count)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                         "regressor_stats_size: count is NULL");
    return stats_common(reg, "regressor_stats_size", count);
}

tsq_status tsq_regressor_stats_export(const tsq_regressor *reg, double *out, int64_t count)
{
    int64_t size;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!out)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL,
                         "regressor_stats_export: out is NULL");
    st = stats_common(reg, "regressor_stats_export", &size);
    if (st != TSQ_OK)
        return st;
    if (count != size)
        return tsq__fail(&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_stats_export: count %lld, the pass has %lld sums",
                         (long long)count, (long long)size);
    stats_move(reg->fit, out, STATS_EXPORT);
    return TSQ_OK;
}

tsq_status tsq_regressor_stats_import(tsq_regressor *reg, const double *in, int64_t count,
                                      int32_t mode)
{
    int64_t size, i;
    tsq_status st;
    if (!reg)
        return TSQ_ERR_NULL;
    if (!in)
        return tsq__fail(&reg->obj, TSQ_ERR_NULL, "regressor_stats_import: in is NULL");
    if (mode != TSQ_STATS_ADD && mode != TSQ_STATS_REPLACE)
        return tsq__fail(&reg->obj, TSQ_ERR_INVALID, "regressor_stats_import: unknown mode %d",
                         (int)mode);
    st = stats_common(reg, "regressor_stats_import", &size);
    if (st != TSQ_OK)
        return st;
    if (count != size)
        return tsq__fail(&reg->obj, TSQ_ERR_TOO_SMALL,
                         "regressor_stats_import: count %lld, the pass has %lld sums",
                         (long long)count, (long long)size);
    for (i = 0; i < count; i++)
        if (!isfinite(in[i]))
            return tsq__fail(&reg->obj, TSQ_ERR_NOT_FINITE,
                             "regressor_stats_import: element %lld is NaN or Inf", (long long)i);
    stats_move(reg->fit, (double *)in, mode);
    tsq__clear(&reg->obj);
    return TSQ_OK;
}

