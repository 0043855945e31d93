/*
 * libtsq - quantizer.h: Step 1: the sparse activation quantizer and tsq_learn_codes (issue 3).
 */
#ifndef TSQ_QUANTIZER_H
#define TSQ_QUANTIZER_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* TSQ_QUANTIZER_H */
