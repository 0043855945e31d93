/*
 * What the four files of the activation quantizer share: the handle's
 * fields and the argument checks. quantizer.c owns the handle, its options
 * and its per-channel parameters; quantizer_ops.c the element-wise calls
 * (encode, forward, decode, backward) and their kernels; quantizer_learn.c
 * observe, fit and tsq_learn_codes; quantizer_io.c the serialized form.
 * The formula is in quant_internal.h, the histogram in
 * activation_histogram.c, the fit of one channel in quantizer_fit.c.
 */
#ifndef TSQ_QUANTIZER_INTERNAL_H
#define TSQ_QUANTIZER_INTERNAL_H

#include "quant/activation_histogram.h"
#include "quant/quant_internal.h"

#define TSQ__QUANTIZER_MAX_CHANNELS INT32_MAX

struct tsq_quantizer {
    tsq__object obj;
    int32_t bits;
    int32_t eps_mode;
    int32_t sub_bits;   /* histogram resolution option; 0 = automatic */
    const tsq__eltwise *kern; /* the element-wise kernels of the context's CPU */
    int64_t channels;   /* 0: per tensor */
    int64_t nparams;    /* max(1, channels) */
    int64_t nset;       /* channels with parameters (delta > 0) */
    double eps_fixed;
    double sparsity;
    float *eps;         /* nparams each; delta 0 = no parameters yet */
    float *delta;
    float *inv_delta;   /* 1.0f / delta, as the formula needs it */
    tsq__act_hist *hist; /* NULL until the first observation */
};

/* How a tensor splits into [outer][channels][inner] for this quantizer. */
typedef struct tsq__qlayout {
    int64_t outer, inner, numel;
} tsq__qlayout;

static inline int32_t tsq__qmax_code(const tsq_quantizer *q) { return (1 << q->bits) - 1; }

/* ---- quantizer.c ---- */
tsq_status tsq__q_layout(const tsq_quantizer *q, const char *where, const char *name,
                         const tsq_tensor *t, tsq__qlayout *l);
/* x is f32, has the quantizer's layout and is finite. */
tsq_status tsq__q_check_input(const tsq_quantizer *q, const char *where, const char *name,
                              const tsq_tensor *x, tsq__qlayout *l);
/* t has the given dtype and x's shape. */
tsq_status tsq__q_check_like(const tsq_quantizer *q, const char *where, const char *name,
                             const tsq_tensor *t, int32_t dtype, const char *xname,
                             const tsq_tensor *x);
tsq_status tsq__q_require_fitted(const tsq_quantizer *q, const char *where);
/* Why (eps, delta) cannot be a quantizer's parameters, or NULL. */
const char *tsq__q_param_problem(float eps, float delta, int32_t maxcode);
void tsq__q_store_param(tsq_quantizer *q, int64_t c, float eps, float delta);
/* The number of samples the statistics hold. */
double tsq__q_observed(const tsq_quantizer *q);
/* The resolution a new histogram gets. */
int32_t tsq__q_hist_sub_bits(const tsq_quantizer *q);

/* ---- quantizer_ops.c ---- */
/* codes = k(x) for the whole tensor, on the context's threads. */
void tsq__q_encode_all(const tsq_quantizer *q, const float *x, uint8_t *codes,
                       const tsq__qlayout *l);

/* ---- quantizer_learn.c ---- */
/* Fits every channel from hist; with error_sum, also the histogram's
 * estimate of the error sum and zero count. Fails only on allocation,
 * before any change to q. */
tsq_status tsq__q_fit_from(tsq_quantizer *q, const char *where, const tsq__act_hist *hist,
                           double *error_sum, double *zeros);

#endif /* TSQ_QUANTIZER_INTERNAL_H */
