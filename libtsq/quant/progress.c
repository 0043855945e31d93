/* Progress reports of the regressor's fit (TSQ_PROGRESS_REGRESSOR_PASS):
 * the passes ended of the most a fit can take, reported by
 * tsq__reg_end_pass after each pass. Kept apart from the regressor's
 * drivers so that they carry only the call. */
#include "quant/progress.h"
#include "quant/regressor_fit.h"

/* 1 statistics pass, rounds + 1 evaluation passes and up to `polish`
 * polish passes with the quantized loss; one pass with the linear loss. */
static int64_t most_passes(const fit_state *f)
{
    if (f->opt.loss == TSQ_LOSS_LINEAR)
        return 1;
    return 1 + ((int64_t)f->opt.rounds + 1) + (int64_t)f->opt.polish;
}

tsq_status tsq__reg_progress(tsq_regressor *reg, const char *where, int32_t done)
{
    fit_state *f = reg->fit;
    int64_t total = most_passes(f), ended = done ? total : f->pass;
    tsq_status st;
    if (ended > total) /* never: the passes stay within the bound */
        ended = total;
    st = tsq__progress(&reg->obj, TSQ_PROGRESS_REGRESSOR_PASS, ended, total, where);
    if (st != TSQ_OK) { /* cancelled: the fit is abandoned, as on any end-of-pass error */
        tsq__reg_fit_free(reg->obj.ctx, f);
        reg->fit = NULL;
    }
    return st;
}
