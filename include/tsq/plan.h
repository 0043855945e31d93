/*
 * libtsq - plan.h: Packed low-bit inference plans and kernels (issue 7).
 */
#ifndef TSQ_PLAN_H
#define TSQ_PLAN_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* TSQ_PLAN_H */
