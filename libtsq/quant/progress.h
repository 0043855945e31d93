/* Progress reports of the regressor's fit (quant/progress.c). */
#ifndef TSQ_QUANT_PROGRESS_H
#define TSQ_QUANT_PROGRESS_H

#include "core/internal.h"

/* After a pass ended (done: the fit finished), reports the passes ended
 * through the context's progress callback. On a cancel the fit is
 * abandoned, as on any end-of-pass error, and TSQ_ERR_CANCELLED returned. */
tsq_status tsq__reg_progress(tsq_regressor *reg, const char *where, int32_t done);

#endif
