/*
 * What each layer kind stores in a .tsq model file, shared by the writer
 * (net_records.c) and the reader (net_load.c): the attributes
 * (TSQ_LAYER_INFO_* values, in file order), the options besides TRAINABLE,
 * and the arrays (the layer's parameters and states by name; low-bit
 * layers store their codes packed instead of their float shadow weights).
 */
#ifndef TSQ_NN_NET_RECORDS_H
#define TSQ_NN_NET_RECORDS_H

#include "nn/nn_internal.h"
#include "io/model_records.h"

typedef struct tsq__kind_spec {
    int32_t kind;
    int32_t nconfig;
    int32_t config[7];  /* TSQ_LAYER_INFO_* keys, in file order */
    int32_t noptions;
    int32_t options[4]; /* TSQ_LAYER_OPT_* keys besides TRAINABLE */
} tsq__kind_spec;

/* The kind's entry, or NULL for a kind the format cannot hold. */
const tsq__kind_spec *tsq__kind_spec_of(int32_t kind);
/* Low-bit dense or conv: codes packed, no float shadow weights. */
int tsq__kind_is_lowbit(int32_t kind);

#endif /* TSQ_NN_NET_RECORDS_H */
