/*
 * Internals of the layers and the sequential network.
 *
 * A layer is a tsq_layer header (below) followed by its kind's own fields;
 * the kind's functions live in a tsq__layer_ops table. Activations cross
 * layers as contiguous float buffers of `batch` samples, each sample in the
 * layer's per-sample shape (C,H,W row-major, i.e. NCHW over the batch, or a
 * feature vector).
 *
 * Gradient convention: backward() OVERWRITES the parameter gradients with
 * the gradient of the current batch and writes dx (when dx is not NULL).
 */
#ifndef TSQ_NN_INTERNAL_H
#define TSQ_NN_INTERNAL_H

#include "internal.h"
#include "kernels/conv.h"
#include "kernels/kernels_internal.h"
#include "kernels/vec.h"

#include <math.h>
#include <stddef.h>

#define TSQ__LAYER_MAX_PARAMS 4
#define TSQ__LAYER_MAX_STATES 4
#define TSQ__MAX_SAMPLE_DIMS 3

/* A named tensor of a layer. Trainable parameters have a gradient tensor of
 * the same shape; states (running statistics, weight codes) have none. */
typedef struct tsq__param {
    tsq_tensor *value;
    tsq_tensor *grad;
    const char *name;
    int decay; /* weight decay applies (weights yes; biases, BN, alpha no) */
    int frozen; /* the built-in optimisers skip it (a low-bit layer's held alpha) */
} tsq__param;

typedef struct tsq__layer_ops {
    int32_t kind;
    const char *name;
    /* Size of the kind's struct, for clone's copy. */
    size_t size;
    /* Checks the per-sample input shape; writes the per-sample output shape.
     * Errors are recorded on the layer. Called once, by tsq_net_append. */
    tsq_status (*setup)(tsq_layer *l, int32_t in_ndim, const int64_t *in_shape,
                        int32_t *out_ndim, int64_t *out_shape);
    /* y = layer(x) for `batch` samples. May allocate workspace. */
    tsq_status (*forward)(tsq_layer *l, const float *x, float *y, int64_t batch, int train);
    /* Gradients from the last forward's x and y; dx may be NULL. */
    tsq_status (*backward)(tsq_layer *l, const float *x, const float *y, const float *dy,
                           float *dx, int64_t batch);
    /* Called on a byte-wise copy `dst` of src, before the parameters are
     * duplicated: replaces every buffer pointer the kind owns with a copy
     * (or NULL for workspaces), so that dst never shares src's memory, even
     * when it fails part-way (then it leaves NULL in what it could not copy).
     * NULL when the kind owns no buffers. */
    tsq_status (*clone_extra)(const tsq_layer *src, tsq_layer *dst);
    /* Frees the kind's own buffers (not the parameters, not the handle). */
    void (*destroy_extra)(tsq_layer *l);
    /* Kind-specific options (NULL: none). */
    tsq_status (*set_option)(tsq_layer *l, int32_t key, double value);
    tsq_status (*get_option)(const tsq_layer *l, int32_t key, double *value);
    /* Kind-specific configuration (NULL: none). */
    tsq_status (*info)(const tsq_layer *l, int32_t key, int64_t *value);
} tsq__layer_ops;

struct tsq_layer {
    tsq__object obj;
    const tsq__layer_ops *ops;
    int32_t nparams, nstates;
    tsq__param params[TSQ__LAYER_MAX_PARAMS];
    tsq__param states[TSQ__LAYER_MAX_STATES];
    int32_t in_ndim, out_ndim;
    int64_t in_shape[TSQ__MAX_SAMPLE_DIMS], out_shape[TSQ__MAX_SAMPLE_DIMS];
    int64_t in_numel, out_numel;
    int is_setup;       /* shapes fixed by tsq_net_append */
    const void *owner;  /* the net that owns it, or NULL */
    int trainable;      /* the built-in optimiser updates the parameters */
    int tsq_select;     /* TSQ_LAYER_OPT_TSQ_SELECT: -1 default, 0 no, 1 yes */
    int last_train;     /* mode of the last forward */
    /* Scratch memory owned by the layer, grown on demand, never shrunk. */
    float *ws;
    size_t ws_floats;
};

/* ---- layer.c: common machinery ---- */
/* Allocates a zeroed layer of ops->size bytes and initialises the header. */
/* The start of every constructor: ctx and the out pointer are there (else
 * TSQ_ERR_NULL, with a message on ctx when it is), and *out is NULL. */
tsq_status tsq__layer_create_begin(tsq_context *ctx, const char *where, tsq_layer **out);
/* The whole constructor of a kind without arguments or parameters. */
tsq_status tsq__layer_create_plain(tsq_context *ctx, const tsq__layer_ops *ops,
                                   const char *where, tsq_layer **out);
tsq_status tsq__layer_alloc(tsq_context *ctx, const tsq__layer_ops *ops, const char *where,
                            tsq_layer **out);
/* Adds a parameter (trainable, with a zeroed gradient) or a state tensor of
 * the given shape; errors on the context (used by constructors). */
tsq_status tsq__layer_add_param(tsq_layer *l, const char *where, const char *name, int decay,
                                int32_t ndim, const int64_t *shape, float **data);
tsq_status tsq__layer_add_state(tsq_layer *l, const char *where, const char *name,
                                int32_t dtype, int32_t ndim, const int64_t *shape,
                                void **data);
/* Frees a layer that no net owns (and its tensors). */
void tsq__layer_free(tsq_layer *l);
/* Deep copy of a layer, not owned by any net; errors on the source's context. */
tsq_status tsq__layer_clone(const tsq_layer *src, tsq_layer **out);
/* Makes l->ws hold at least n floats. */
tsq_status tsq__layer_workspace(tsq_layer *l, const char *where, size_t n);
/* Data of parameter / state i. */
float *tsq__param_data(const tsq_layer *l, int32_t i);
float *tsq__param_grad(const tsq_layer *l, int32_t i);
void *tsq__state_data(const tsq_layer *l, int32_t i);
int64_t tsq__layer_threads(const tsq_layer *l);
/* Formats a per-sample shape as "(32,28,28)" into buf. */
const char *tsq__shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape);
/* He/Kaiming normal initialisation: N(0, 2/fan_in), from a fresh stream of
 * the context's seed (so the result depends on seed and creation order). */
void tsq__init_he_normal(tsq_context *ctx, float *w, int64_t n, int64_t fan_in);

/* The float kernels the layers run (geometry, im2col, conv and dense GEMMs,
 * element-wise loops, pooling) live in kernels/; tsq__parallel_range in
 * core/parallel.h. */

/* ---- conv2d.c ---- */
const tsq__conv_geom *tsq__conv2d_geom(const tsq_layer *l);
/* The argument checks of the conv2d and low-bit conv constructors
 * (tsq__layer_create_begin first), and the configuration keys they share. */
tsq_status tsq__conv_check_args(tsq_context *ctx, const char *where, int64_t cin, int64_t cout,
                                int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                                tsq_layer **layer);
tsq_status tsq__conv_info(const tsq__conv_geom *g, int32_t key, int64_t *value);
/* Fits g (configured at creation) to the layer's (C,H,W) input. */
tsq_status tsq__conv_setup(tsq_layer *l, tsq__conv_geom *g, int32_t in_ndim,
                           const int64_t *in_shape, int32_t *out_ndim, int64_t *out_shape);

/* ---- dense.c ---- */
/* The argument checks of the dense and low-bit dense constructors
 * (tsq__layer_create_begin first). */
tsq_status tsq__dense_check_args(tsq_context *ctx, const char *where, int64_t in, int64_t out,
                                 tsq_layer **layer);
/* The end of the float dense and conv2d constructors: adds the "weight"
 * (wshape, He-initialised with fan-in = its elements per output channel)
 * and "bias" (wshape[0]) parameters and hands the layer out, or frees it. */
tsq_status tsq__layer_finish_weight_bias(tsq_layer *l, const char *where, int32_t ndim,
                                         const int64_t *wshape, tsq_layer **out);
tsq_status tsq__dense_setup(tsq_layer *l, int64_t in, int64_t out, int32_t in_ndim,
                            const int64_t *in_shape, int32_t *out_ndim, int64_t *out_shape);

/* ---- qat_weights.c: quantization-aware weights of dense / conv2d ---- */
typedef struct tsq__qat {
    int32_t bits;        /* TSQ_LAYER_OPT_QAT_WEIGHT_BITS, 0: off */
    int32_t exact_scale; /* TSQ_LAYER_OPT_QAT_SCALE */
    /* The last forward's quantized weights, codes and scales (workspace:
     * a clone starts without them). */
    float *wq, *alpha;
    int8_t *codes;
    size_t cap;
} tsq__qat;
/* The weights the forward uses: w itself when QAT is off, else Wq (kept
 * for backward). NULL with *st set on allocation failure. */
const float *tsq__qat_weights(tsq__qat *qat, tsq_layer *l, const float *w, int64_t rows,
                              int64_t k, tsq_status *st);
/* Codes (rows x k) and scales (rows) of w under the layer's QAT settings. */
tsq_status tsq__qat_codes(const tsq__qat *qat, tsq_layer *l, const float *w, int64_t rows,
                          int64_t k, int8_t *codes, float *alpha);
void tsq__qat_free(tsq__qat *qat, tsq_layer *l);
/* The clone_extra and destroy_extra of the layers with QAT state: a clone
 * keeps the settings and starts without the workspace. */
tsq_status tsq__qat_clone_extra(const tsq_layer *src, tsq_layer *dst);
void tsq__qat_destroy_extra(tsq_layer *l);
tsq_status tsq__qat_set_option(tsq__qat *qat, tsq_layer *l, int32_t key, double value);
tsq_status tsq__qat_get_option(const tsq__qat *qat, const tsq_layer *l, int32_t key,
                               double *value);
/* The QAT state of a dense or conv2d layer (NULL for other kinds). */
tsq__qat *tsq__layer_qat(tsq_layer *l);
tsq__qat *tsq__conv2d_qat(tsq_layer *l);

/* ---- kinds (constructors are public; these are for the net's rewrites) ---- */
int tsq__layer_is(const tsq_layer *l, int32_t kind);
/* Batch-norm: the per-channel affine y = s*x + t it applies in eval mode. */
void tsq__batchnorm_eval_affine(const tsq_layer *bn, float *s, float *t);
int64_t tsq__batchnorm_channels(const tsq_layer *bn);
/* A batch-norm and the ReLU after it as one step (batchnorm.c): the
 * forward writes the batch-norm's output y and the ReLU's r; the backward
 * takes the gradient of r (dr) and writes this layer's parameter
 * gradients and dx (NULL: none), as the two layers' backwards would. */
tsq_status tsq__batchnorm_forward_relu(tsq_layer *bn, const float *x, float *y, float *r,
                                       int64_t batch, int train);
tsq_status tsq__batchnorm_backward_relu(tsq_layer *bn, const float *x, const float *dr,
                                        float *dx, int64_t batch);
/* Low-bit layer pieces. */
int tsq__layer_is_lowbit(const tsq_layer *l);
/* Gives `codes` (the right element count, row-major outputs first) the
 * low-bit layer's weight shape, the one shape tsq_layer_lowbit_set takes. */
tsq_status tsq__lowbit_shape_codes(const tsq_layer *l, tsq_tensor *codes);
void tsq__lowbit_fold_affine(tsq_layer *l, const float *s, const float *t);
/* Activation quantizer layer parameters of input channel c (c >= 0). */
int tsq__layer_is_act_quant(const tsq_layer *l);
void tsq__act_quant_channel(const tsq_layer *l, int64_t c, int32_t *bits, float *eps,
                            float *delta);
int64_t tsq__act_quant_nchannels(const tsq_layer *l);

/* ---- the sequential net (net.c), optimisers (optimizer.c, schedule.c) ---- */
enum { TSQ__OPT_NONE = 0, TSQ__OPT_SGD = 1, TSQ__OPT_ADAM = 2 };

typedef struct tsq__optimizer {
    int32_t kind;
    double lr, momentum, beta1, beta2, eps, weight_decay;
    int nesterov;
    int32_t schedule;       /* TSQ_LR_* */
    int64_t schedule_steps;
    double schedule_param;
    int64_t t;              /* updates made so far */
    /* Per trainable parameter (net order): first and second moments;
     * allocated by tsq__optimizer_prepare, dropped when the net changes. */
    float **m, **v;
    int32_t nstate;
} tsq__optimizer;

struct tsq_net {
    tsq__object obj;
    tsq_layer **layers;
    int32_t nlayers, cap;
    int32_t in_ndim;
    int64_t in_shape[TSQ__MAX_SAMPLE_DIMS], in_numel;
    /* act[0] = copy of the input, act[i+1] = output of layer i; each holds
     * act_cap samples. */
    float **act;
    int64_t act_cap;
    float *grad_a, *grad_b;  /* backward ping-pong, grad_cap floats each */
    size_t grad_cap;
    int64_t batch;           /* samples of the last forward */
    int have_forward;        /* act[] hold a whole forward of `batch` samples */
    int32_t act_valid;       /* act[0..act_valid] hold the last (partial) forward */
    uint64_t generation;     /* counts changes of the layer list */
    /* State that a later folder hangs on the net (the TSQ conversion
     * session of libtsq/convert): nn never looks inside, it only frees it
     * and copies its settings into a clone through `attach_ops`. */
    void *attached;
    const struct tsq__net_attach_ops *attach_ops;
    /* Trainable parameters in layer order. */
    tsq__param **params;
    int32_t *param_layer;
    int32_t nparams;
    tsq__optimizer opt;
    /* tsq_net_set_distillation: temperature and weight of the soft targets */
    double kd_temperature, kd_weight;
};

/* After any change of the layer list: parameter list rebuilt, activations
 * and optimiser moments dropped. */
tsq_status tsq__net_structure_changed(tsq_net *net);
/* Forward of layers [0, upto) (upto = nlayers for the whole net) on n
 * samples already in act[0]; buffers must hold n samples. */
tsq_status tsq__net_run(tsq_net *net, int32_t upto, int64_t n, int train);
/* Validates x and runs a forward (output in act[nlayers]); *n = batch. */
tsq_status tsq__net_forward(tsq_net *net, const char *where, const tsq_tensor *x, int train,
                            int64_t *n);
/* The per-sample output shape (the input's for an empty net). */
void tsq__net_output_shape(const tsq_net *net, int32_t *ndim, const int64_t **shape);
/* Backward from the gradient of the net output in grad_a; dx may be NULL. */
tsq_status tsq__net_backward(tsq_net *net, float *dx);
/* Makes the activation buffers hold n samples. */
tsq_status tsq__net_reserve(tsq_net *net, int64_t n);
/* Drops the buffers tsq__net_reserve made (the layer list changed). */
void tsq__net_free_buffers(tsq_net *net);
/* Checks x (f32, first dim N, N * in_numel elements, finite); *n = N. */
tsq_status tsq__net_check_input(tsq_net *net, const char *where, const tsq_tensor *x,
                                int64_t *n);
/* Inserts / removes (and frees) / replaces (freeing the old one) a layer,
 * with shape checks but no ownership checks (the caller made sure). On
 * failure the net is unchanged. */
tsq_status tsq__net_insert(tsq_net *net, const char *where, int32_t index, tsq_layer *layer);
tsq_status tsq__net_remove(tsq_net *net, int32_t index);
tsq_status tsq__net_replace(tsq_net *net, const char *where, int32_t index, tsq_layer *layer);

/* How the net handles its attached state (see struct tsq_net). nn calls
 * these and knows nothing else of it, so nn never depends on the folder that
 * attaches it. */
typedef struct tsq__net_attach_ops {
    /* Frees net->attached (and ends any session it holds). */
    void (*destroy)(tsq_net *net);
    /* Gives a fresh clone `dst` the settings of src's attached state (not a
     * running session). */
    tsq_status (*copy_settings)(tsq_net *dst, const tsq_net *src);
} tsq__net_attach_ops;

void tsq__optimizer_free_state(tsq_net *net);
tsq_status tsq__optimizer_prepare(tsq_net *net, const char *where);
void tsq__optimizer_update(tsq_net *net);
tsq_status tsq__optimizer_copy(tsq_net *dst, const tsq_net *src);
double tsq__schedule_lr(const tsq__optimizer *opt, int64_t t);

/* ---- loss.c ---- */
/* Mean softmax cross-entropy of `batch` rows of `classes` logits; labels
 * must be valid. dlogits (may be NULL) receives d(loss)/d(logits). */
void tsq__softmax_xent(const float *logits, const int32_t *labels, int64_t batch,
                       int64_t classes, double *loss, int64_t *correct, int32_t *pred,
                       float *dlogits);
/* Mixes the soft-target term of a teacher's logits into a cross-entropy's
 * loss and dlogits (T > 0, 0 <= w <= 1). */
void tsq__distill_add(const float *logits, const float *teacher, int64_t batch,
                      int64_t classes, double T, double w, double *loss, float *dlogits);

/* Low-bit layers (lowbit_layer.c) keep every scale alpha at least
 * TSQ__LOWBIT_ALPHA_MIN (kernels/kernels_internal.h), in case an optimiser
 * drives it to 0; the plan and the model reader clamp alike. */

/* A low-bit layer's effective weight code: clamp(rint(S / alpha), -m, m),
 * with alpha >= TSQ__LOWBIT_ALPHA_MIN. The one place of this rule: the
 * layer's forward and the inference plan (kernels/plan.c) must agree. A NaN
 * shadow weight (written by the host, or folded from a degenerate
 * batch-norm) gives code 0: converting NaN to int8 is undefined. */
static inline int8_t tsq__lowbit_code(float S, float alpha, int32_t m)
{
    float v = rintf(S / alpha), fm = (float)m;
    v = v < -fm ? -fm : v > fm ? fm : v == v ? v : 0.0f;
    return (int8_t)v;
}

#endif
