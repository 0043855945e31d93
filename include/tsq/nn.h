/*
 * libtsq - nn.h: Layers, networks and the caller-driven training loop (issue 5).
 */
#ifndef TSQ_NN_H
#define TSQ_NN_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* TSQ_NN_H */
