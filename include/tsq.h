/*
 * libtsq - Two-Step Quantization (Wang et al., CVPR 2018) for low-bit
 * neural networks: ternary or 2..8-bit weights, 1..8-bit activations.
 *
 * The umbrella header: include this one. Each concern has its own header
 * under tsq/, documented call by call. See docs/ for the method.
 *
 * Stable surface: everything declared here unless TSQ_EXPERIMENTAL is
 * defined, which adds the experimental calls (outside the ABI promise).
 */
#ifndef TSQ_H
#define TSQ_H

#include "tsq/core.h"
#include "tsq/tensor.h"
#include "tsq/quantizer.h"
#include "tsq/regressor.h"
#include "tsq/nn.h"
#include "tsq/plan.h"
#include "tsq/model.h"

#endif /* TSQ_H */
