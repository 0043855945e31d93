/*
 * libtsq - regressor.h: Step 2: the low-bit weight regressor and tsq_fit_transform (issue 4).
 */
#ifndef TSQ_REGRESSOR_H
#define TSQ_REGRESSOR_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* TSQ_REGRESSOR_H */
