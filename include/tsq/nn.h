/*
 * libtsq - nn.h: layers, sequential networks and the caller-driven training
 * loop. See docs/nn.md (layers, formulas, folding) and
 * docs/training-loop.md (the loop, with a complete example).
 *
 * Data layout: a batch of images is an f32 tensor (N, C, H, W), row-major
 * (NCHW); a batch of vectors is (N, F). The "sample shape" of a layer or a
 * net is the shape of one sample: (C, H, W) or (F).
 *
 * Ownership: a layer is created alone; tsq_net_append() hands it to a net,
 * which then owns and destroys it. Tensors obtained from a layer or a net
 * (parameters, gradients, states) are borrowed: they stay valid while the
 * owner lives and its layer list is not changed; never destroy them.
 *
 * libtsq never reads files, never shuffles data and never owns an epoch: the
 * host calls tsq_net_train_step() once per batch, in its own loop.
 *
 * Threads: a net and its layers form one handle: use them from one thread at
 * a time. The context's TSQ_CONTEXT_THREADS (read at each call) chooses how
 * layers use several cores:
 *   - 1: libtsq's loops run on the calling thread and each GEMM is left to
 *     the BLAS, which may thread it (OPENBLAS_NUM_THREADS);
 *   - T > 1: libtsq's T threads split the batch, each running its own
 *     GEMMs. Give the BLAS one thread then (OPENBLAS_NUM_THREADS=1):
 *     OpenBLAS makes concurrent multi-threaded calls wait for each other,
 *     and its idle threads spin: T > 1 with a multi-threaded BLAS was
 *     many times slower on 2 cores (docs/nn.md, "Speed").
 * With the same seed, thread count and BLAS, results are bit-identical.
 */
#ifndef TSQ_NN_H
#define TSQ_NN_H

#include "quantizer.h"
#include "regressor.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsq_layer tsq_layer;
typedef struct tsq_net tsq_net;

/* ------------------------------------------------------------------ */
/* Layers                                                              */
/* ------------------------------------------------------------------ */

/* Layer kinds, as reported by tsq_layer_kind(). */
enum {
    TSQ_LAYER_DENSE = 1,           /* y = W x + b */
    TSQ_LAYER_CONV2D = 2,          /* 2-D convolution (cross-correlation) + bias */
    TSQ_LAYER_BATCHNORM = 3,       /* batch normalisation, 1-d or 2-d */
    TSQ_LAYER_RELU = 4,            /* max(x, 0) */
    TSQ_LAYER_ACT_QUANT = 5,       /* sparse activation quantizer (TSQ step 1) */
    TSQ_LAYER_MAXPOOL2D = 6,       /* max over k x k windows */
    TSQ_LAYER_GLOBAL_AVGPOOL = 7,  /* (C, H, W) -> (C) mean */
    TSQ_LAYER_FLATTEN = 8,         /* (C, H, W) -> (C*H*W) */
    TSQ_LAYER_LOWBIT_DENSE = 9,    /* y = alpha (.) (W_codes x) + b */
    TSQ_LAYER_LOWBIT_CONV2D = 10   /* the same over convolution patches */
};

/*! tsq_layer_dense_create() :
 *  A fully connected layer y = W x + b with W of shape (out, in) and b of
 *  shape (out). Its input must have sample shape (in): put a flatten layer
 *  after images. W is initialised He-normal, N(0, 2/in), from a new random
 *  stream of the context's seed; b is 0.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx or out), TSQ_ERR_INVALID (in or out
 *  < 1 or above 2^30), TSQ_ERR_NO_MEMORY. Errors go on the context. */
TSQ_API tsq_status tsq_layer_dense_create(tsq_context *ctx, int64_t in, int64_t out,
                                          tsq_layer **layer);

/*! tsq_layer_conv2d_create() :
 *  A 2-D convolution with `cin` input and `cout` output channels, a kh x kw
 *  kernel, the same stride and zero padding in both directions, and a bias.
 *  Output size: oh = (H + 2 pad - kh) / stride + 1 (floor), likewise ow.
 *  Weights W (cout, cin, kh, kw) are He-normal N(0, 2/(cin kh kw)), b = 0.
 *  Computed as im2col + cblas_sgemm per image (1x1 stride-1 convolutions
 *  skip the im2col).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (a size < 1 or above its
 *  bound: channels 2^24, kernel 1024, stride 1024; pad < 0 or >= kernel),
 *  TSQ_ERR_NO_MEMORY. Errors go on the context. */
TSQ_API tsq_status tsq_layer_conv2d_create(tsq_context *ctx, int64_t cin, int64_t cout,
                                           int64_t kh, int64_t kw, int64_t stride,
                                           int64_t pad, tsq_layer **layer);

/*! tsq_layer_batchnorm_create() :
 *  Batch normalisation over `channels` channels: on sample shape (C) it is
 *  1-d (statistics over the batch), on (C, H, W) 2-d (over batch and
 *  positions). Train mode normalises with the batch statistics and updates
 *  running_mean / running_var (momentum TSQ_LAYER_OPT_BN_MOMENTUM, running
 *  variance unbiased); eval mode uses the running statistics. Parameters
 *  gamma = 1, beta = 0; states running_mean = 0, running_var = 1.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (channels < 1 or > 2^24),
 *  TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_layer_batchnorm_create(tsq_context *ctx, int64_t channels,
                                              tsq_layer **layer);

/*! tsq_layer_relu_create() : y = max(x, 0), any sample shape.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_layer_relu_create(tsq_context *ctx, tsq_layer **layer);

/*! tsq_layer_maxpool2d_create() :
 *  Max over k x k windows moved by `stride` (no padding; oh = (H - k) /
 *  stride + 1). The gradient goes to the first maximum of each window.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (k or stride outside
 *  1..1024), TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_layer_maxpool2d_create(tsq_context *ctx, int64_t k, int64_t stride,
                                              tsq_layer **layer);

/*! tsq_layer_global_avgpool_create() : (C, H, W) -> (C), the mean over
 *  positions. @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_layer_global_avgpool_create(tsq_context *ctx, tsq_layer **layer);

/*! tsq_layer_flatten_create() : (C, H, W) -> (C*H*W) (any sample shape to
 *  a vector; the order of elements is kept).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_layer_flatten_create(tsq_context *ctx, tsq_layer **layer);

/*! tsq_layer_act_quant_create() :
 *  The sparse activation quantizer of TSQ step 1 as a layer, with one
 *  (eps, delta) for the whole tensor (per-channel ones come from
 *  tsq_net_learn_codes or tsq_layer_act_quant_set_channel). With
 *  k = Q(x) the code of x (docs/nn.md; the formula of
 *  libtsq/quant/quant_internal.h), the output is k * delta ("values" mode,
 *  the default, for training) or k itself ("codes" mode, the input that a
 *  low-bit layer expects; see TSQ_LAYER_OPT_AQ_OUTPUT_CODES).
 *  Backward is the straight-through estimator: dx = dy where
 *  0 < x < (2^bits - 1) delta, else 0 (divided by delta in codes mode).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (bits outside 1..8, eps
 *  < 0, delta <= 0, or 1/delta or (2^bits - 1) delta not finite in float,
 *  e.g. a denormal delta), TSQ_ERR_NOT_FINITE, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_layer_act_quant_create(tsq_context *ctx, int32_t bits, float eps,
                                              float delta, tsq_layer **layer);

/*! tsq_layer_act_quant_set_channel() :
 *  Sets (bits, eps, delta) of one channel (refused with TSQ_ERR_STATE while
 *  the layer learns delta, TSQ_LAYER_OPT_AQ_LEARN_DELTA). channel = -1 sets a single
 *  per-tensor quantizer; channel >= 0 turns the layer into a per-channel
 *  quantizer over `nchannels` channels (dimension 0 of the sample shape),
 *  the other channels keeping the per-tensor values they had. nchannels is
 *  ignored for channel = -1 and must stay the same once per-channel.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (not a quantizer layer,
 *  bad bits/eps/delta, channel out of range, nchannels changed or not
 *  matching an appended layer's channels), TSQ_ERR_NOT_FINITE,
 *  TSQ_ERR_NO_MEMORY. Errors go on the layer. */
TSQ_API tsq_status tsq_layer_act_quant_set_channel(tsq_layer *layer, int64_t channel,
                                                   int64_t nchannels, int32_t bits,
                                                   float eps, float delta);

/*! tsq_layer_act_quant_get_channel() :
 *  Reads (bits, eps, delta) of a channel (any channel of a per-tensor
 *  quantizer gives its single set; -1 is accepted too). *nchannels gets 0
 *  for a per-tensor quantizer. Output pointers may be NULL.
 *  @return TSQ_OK, TSQ_ERR_NULL (layer), TSQ_ERR_INVALID. */
TSQ_API tsq_status tsq_layer_act_quant_get_channel(const tsq_layer *layer, int64_t channel,
                                                   int64_t *nchannels, int32_t *bits,
                                                   float *eps, float *delta);

/*! tsq_layer_act_quant_create_from() :
 *  A quantizer layer with the parameters of a fitted tsq_quantizer (bits,
 *  and eps, delta per tensor or per channel: the quantizer's axis 1 of a
 *  batch is the layer's channel axis). q is only read; the layer keeps no
 *  reference to it.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (q not fitted),
 *  TSQ_ERR_NO_MEMORY. Errors go on the context. */
TSQ_API tsq_status tsq_layer_act_quant_create_from(tsq_context *ctx, const tsq_quantizer *q,
                                                   tsq_layer **layer);

/*! tsq_layer_lowbit_dense_create() / tsq_layer_lowbit_conv2d_create() :
 *  The quantized forms of dense and conv2d that TSQ step 2 produces. They
 *  hold, per output channel c: integer weight codes w_c (int8, in the
 *  alphabet -m..m with m = 2^(weight_bits-1) - 1, so weight_bits = 2 is
 *  ternary), a scale alpha_c > 0 and an offset b_c, and compute
 *      y_c = alpha_c * (x . w_c) + b_c
 *  (x: input codes, or any input). The dot products of integer codes are
 *  exact in float. For fine-tuning they keep full-precision shadow weights
 *  S (parameter "weight", initialised to alpha_c w_c): before each forward
 *  the codes are re-derived as w = clamp(round(S / alpha_c), -m, m), and
 *  backward passes the gradient straight through to S (zero where
 *  |S / alpha_c| > m + 1/2). alpha and b are parameters too. A new layer
 *  has all codes 0, alpha 1, b 0: set them with tsq_layer_lowbit_set().
 *  Shapes and bounds as tsq_layer_dense_create / tsq_layer_conv2d_create;
 *  weight_bits in 2..8.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_layer_lowbit_dense_create(tsq_context *ctx, int64_t in, int64_t out,
                                                 int32_t weight_bits, tsq_layer **layer);
TSQ_API tsq_status tsq_layer_lowbit_conv2d_create(tsq_context *ctx, int64_t cin,
                                                  int64_t cout, int64_t kh, int64_t kw,
                                                  int64_t stride, int64_t pad,
                                                  int32_t weight_bits, tsq_layer **layer);

/*! tsq_layer_lowbit_set() :
 *  Sets a low-bit layer's codes, scales and offsets, and resets the shadow
 *  weights to alpha_c * codes_c.
 *  @param codes  i8 tensor in exactly the layer's weight shape, outputs
 *                first: (out, in) for lowbit_dense, (cout, cin, kh, kw) for
 *                lowbit_conv2d (the layouts of dense and conv2d weights);
 *                values in -m..m. Any other shape, even of the right size
 *                (flat, or the transposed (in, out)), is refused with
 *                TSQ_ERR_SHAPE and a message naming the expected shape.
 *  @param alpha  f32 with `out` elements, all > 0.
 *  @param bias   f32 with `out` elements, or NULL for 0.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (not a low-bit layer, a
 *  code out of range, alpha <= 0), TSQ_ERR_DTYPE, TSQ_ERR_SHAPE (codes not
 *  in the weight shape, or alpha/bias element counts), TSQ_ERR_NOT_FINITE.
 *  On error nothing is changed. */
TSQ_API tsq_status tsq_layer_lowbit_set(tsq_layer *layer, const tsq_tensor *codes,
                                        const tsq_tensor *alpha, const tsq_tensor *bias);

/*! tsq_layer_destroy() :
 *  Frees a layer that no net owns. A layer owned by a net is left alone
 *  (the net frees it). Accepts NULL. */
TSQ_API void tsq_layer_destroy(tsq_layer *layer);

/*! tsq_layer_errmsg() : the message of the last failed call on the layer,
 *  "" if none; a static "no layer" for NULL. Owned by the layer. */
TSQ_API const char *tsq_layer_errmsg(const tsq_layer *layer);

/*! tsq_layer_kind() : writes the TSQ_LAYER_* kind.
 *  @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_layer_kind(const tsq_layer *layer, int32_t *kind);

/*! tsq_layer_kind_name() : a static name of a kind ("conv2d", ...), or
 *  "unknown". Cannot fail. Thread-safe. */
TSQ_API const char *tsq_layer_kind_name(int32_t kind);

/* Configuration keys of tsq_layer_info (read-only integers). A key that does
 * not apply to the layer's kind gives TSQ_ERR_INVALID. */
enum {
    TSQ_LAYER_INFO_IN_CHANNELS = 0x0501,  /* dense: in; conv: cin; BN / quantizer: channels */
    TSQ_LAYER_INFO_OUT_CHANNELS = 0x0502, /* dense: out; conv: cout */
    TSQ_LAYER_INFO_KERNEL_H = 0x0503,     /* conv, max-pool */
    TSQ_LAYER_INFO_KERNEL_W = 0x0504,
    TSQ_LAYER_INFO_STRIDE = 0x0505,       /* conv, max-pool */
    TSQ_LAYER_INFO_PAD = 0x0506,          /* conv */
    TSQ_LAYER_INFO_WEIGHT_BITS = 0x0507,  /* low-bit layers */
    TSQ_LAYER_INFO_BITS = 0x0508          /* quantizer: bits of channel 0 */
};

/*! tsq_layer_info() : reads one configuration value.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (key not valid here). */
TSQ_API tsq_status tsq_layer_info(const tsq_layer *layer, int32_t key, int64_t *value);

/*! tsq_layer_sample_shapes() :
 *  The layer's per-sample input and output shapes, known once it is
 *  appended to a net. Each array holds `capacity` entries (3 suffices).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (not in a net yet),
 *  TSQ_ERR_TOO_SMALL. */
TSQ_API tsq_status tsq_layer_sample_shapes(const tsq_layer *layer, int64_t *in_shape,
                                           int32_t *in_ndim, int64_t *out_shape,
                                           int32_t *out_ndim, int32_t capacity);

/* Layer options (tsq_layer_set_option / get_option / option_bounds): the
 * 0x0400 family. Each applies to the kinds its comment names (TRAINABLE to
 * every kind); a key of another kind or family is refused. Flags take 0 or
 * 1; every integer option refuses non-integral values. */
enum {
    TSQ_LAYER_OPT_TRAINABLE = 0x0401,      /* 1: built-in optimisers update this layer; 0/1, default 1 */
    TSQ_LAYER_OPT_BN_MOMENTUM = 0x0402,    /* running-average weight of a new batch; (0, 1], default 0.1 */
    TSQ_LAYER_OPT_BN_EPS = 0x0403,         /* added to the variance; [1e-12, 1], default 1e-5 */
    TSQ_LAYER_OPT_BN_FROZEN = 0x0404,      /* 1: train mode uses (and keeps) the running statistics; default 0 */
    TSQ_LAYER_OPT_AQ_OUTPUT_CODES = 0x0405, /* quantizer: 1 outputs codes k, 0 values k*delta; default 0 */
    /* Network-level TSQ selection, -1, 0 or 1 (default -1 = the default
     * rule). On a ReLU or quantizer layer: whether tsq_net_learn_codes puts
     * (or refits) a quantizer there (default: yes). On a dense or conv2d
     * layer: whether tsq_net_fit_transform converts it to low-bit (default:
     * every one except the first and the last dense/conv of the net). */
    TSQ_LAYER_OPT_TSQ_SELECT = 0x0406,
    /* Low-bit dense/conv2d: 1: the built-in optimisers update the scales
     * alpha; 0: they hold alpha fixed (shadow weights and offsets still
     * train; the gradient of alpha is still computed). Default 0: a trained
     * alpha was unstable at fine-tuning learning rates (docs/nn.md,
     * "Fine-tuning low-bit layers"). A caller's own optimiser can read this
     * option to follow suit. */
    TSQ_LAYER_OPT_LOWBIT_TRAIN_ALPHA = 0x0407,
    /* Joint quantization-aware training (docs/method.md §5; docs/nn.md,
     * "Joint QAT"). On a dense or conv2d layer: 0 (default) off, or the
     * weight bits b in 2..8 (2 = ternary): every forward computes with
     * Wq_c = a_c * clamp(round(W_c / a_c), -m, m), m = 2^(b-1) - 1, per
     * output channel c, from the full-precision shadow weights W, and
     * backward passes dL/dWq straight through to W. tsq_net_convert_qat
     * turns such a layer into a low-bit layer with the same codes. */
    TSQ_LAYER_OPT_QAT_WEIGHT_BITS = 0x0408,
    /* How a_c is chosen: 0 (default) ternary: TWN, threshold t = 0.7 mean|W_c|,
     * a_c = mean of |W_c| above t; k-bit: a_c = max|W_c| / m refined by
     * 4 least-squares steps a = <W, q> / <q, q>. 1: the exact least-squares
     * optimum over a_c (ternary: the best of the top-k supports of |W_c|;
     * k-bit: as 0). Dense and conv2d only. */
    TSQ_LAYER_OPT_QAT_SCALE = 0x0409,
    /* Quantizer layer: 1 makes delta a trainable parameter (named "delta",
     * one per channel) with the LSQ-style straight-through gradient
     * dy/ddelta = k - x/delta inside the range, 2^bits - 1 above it and 0
     * below eps, scaled by 1/sqrt(elements per channel x (2^bits - 1));
     * eps stays tied to delta at the ratio eps/delta it had when the option
     * was set. 0 (default): eps and delta are fixed. Values mode only. */
    TSQ_LAYER_OPT_AQ_LEARN_DELTA = 0x040A
};

/*! tsq_layer_set_option() / tsq_layer_get_option() :
 *  Sets or reads option `key` (TSQ_LAYER_OPT_*) of the layer.
 *  @return TSQ_OK, TSQ_ERR_NULL (layer; or value, with a message on the
 *  layer), TSQ_ERR_INVALID (unknown key, a key of another family, a key
 *  that does not apply to this kind, NaN, a value outside
 *  tsq_layer_option_bounds() or not integral where it must be, or a
 *  combination the kind refuses: QAT weight bits 1, delta learning with
 *  codes output), TSQ_ERR_NO_MEMORY (TSQ_LAYER_OPT_AQ_LEARN_DELTA). */
TSQ_API tsq_status tsq_layer_set_option(tsq_layer *layer, int32_t key, double value);
TSQ_API tsq_status tsq_layer_get_option(const tsq_layer *layer, int32_t key, double *value);

/*! tsq_layer_option_bounds() : the inclusive range of an option's values
 *  (an open lower bound is reported as the smallest allowed double above it).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key). Thread-safe. */
TSQ_API tsq_status tsq_layer_option_bounds(int32_t key, double *lo, double *hi);

/*! tsq_layer_param_count() : number of trainable parameters (dense/conv:
 *  weight, bias; BN: gamma, beta; low-bit: weight (shadow), alpha, bias).
 *  @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_layer_param_count(const tsq_layer *layer, int32_t *count);

/*! tsq_layer_param() :
 *  Borrowed pointers to parameter `index`'s value and gradient (f32
 *  tensors of the same shape; either output may be NULL) and its static
 *  name. The host may read and write both (e.g. its own optimiser, or
 *  loading weights). Gradients are those of the last backward.
 *  @return TSQ_OK, TSQ_ERR_NULL (layer), TSQ_ERR_INVALID (index). */
TSQ_API tsq_status tsq_layer_param(tsq_layer *layer, int32_t index, tsq_tensor **value,
                                   tsq_tensor **grad, const char **name);

/*! tsq_layer_state_count() / tsq_layer_state() :
 *  Non-trainable tensors: BN "running_mean", "running_var" (f32); low-bit
 *  "weight_codes" (i8, re-derived from the shadow weights at each forward).
 *  Borrowed, writable (e.g. to load a model).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (index). */
TSQ_API tsq_status tsq_layer_state_count(const tsq_layer *layer, int32_t *count);
TSQ_API tsq_status tsq_layer_state(tsq_layer *layer, int32_t index, tsq_tensor **value,
                                   const char **name);

/* ------------------------------------------------------------------ */
/* Loss                                                                */
/* ------------------------------------------------------------------ */

/*! tsq_nn_softmax_cross_entropy() :
 *  Mean softmax cross-entropy of logits (N, K) against labels[0..n-1]
 *  (each in 0..K-1, n == N): loss = -(1/N) sum_i log softmax(z_i)[y_i].
 *  Optional outputs (NULL to skip): *loss, *correct (argmax == label; ties
 *  go to the lowest index), dlogits (f32, N x K elements) = d loss / d z =
 *  (softmax(z) - onehot(y)) / N.
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx, logits, labels), TSQ_ERR_DTYPE,
 *  TSQ_ERR_SHAPE (logits not 2-d, dlogits size), TSQ_ERR_INVALID (n != N,
 *  a label out of range), TSQ_ERR_NOT_FINITE (a logit is NaN or Inf).
 *  Errors go on the context; nothing is written then. */
TSQ_API tsq_status tsq_nn_softmax_cross_entropy(tsq_context *ctx, const tsq_tensor *logits,
                                                const int32_t *labels, int64_t n, double *loss,
                                                int64_t *correct, tsq_tensor *dlogits);

/* ------------------------------------------------------------------ */
/* Sequential networks                                                 */
/* ------------------------------------------------------------------ */

/*! tsq_net_create() :
 *  An empty sequential network for inputs of the given sample shape
 *  (ndim 1..3, e.g. {1, 28, 28}). Batches of any size N >= 1 are accepted.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_SHAPE (ndim or a size < 1),
 *  TSQ_ERR_OVERFLOW, TSQ_ERR_NO_MEMORY. Errors go on the context. */
TSQ_API tsq_status tsq_net_create(tsq_context *ctx, int32_t ndim, const int64_t *sample_shape,
                                  tsq_net **net);

/*! tsq_net_destroy() : frees the net and every layer it owns. Accepts NULL. */
TSQ_API void tsq_net_destroy(tsq_net *net);

/*! tsq_net_errmsg() : the last failed call's message on this net ("" if
 *  none); a static "no net" for NULL. */
TSQ_API const char *tsq_net_errmsg(const tsq_net *net);

/*! tsq_net_append() :
 *  Appends a layer. Its input shape must fit the current output shape:
 *  "net_append: layer 3: dense: expects 100 input features, gets 64".
 *  On success the net owns the layer (do not destroy it; tsq_layer_destroy
 *  on it does nothing). On failure the caller keeps it. Drops the
 *  optimiser's moments (momentum, Adam averages; settings stay).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_SHAPE, TSQ_ERR_STATE (the layer is
 *  already in a net, or from another context), TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_append(tsq_net *net, tsq_layer *layer);

/*! tsq_net_clone() :
 *  A deep copy of the net (layers, parameters, states, optimiser settings
 *  and state, step count, conversion options and the regressor's
 *  settings; not a running TSQ session) made from the same context. Use it
 *  to keep the best network of a run, or the step-1 network before step 2.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_NO_MEMORY (on the net). */
TSQ_API tsq_status tsq_net_clone(const tsq_net *net, tsq_net **copy);

/*! tsq_net_copy_params() :
 *  Copies parameters and states from `src` into `dst`, which must have the
 *  same layer kinds and shapes (e.g. a clone). Optimiser state is kept.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_SHAPE (different structure; on dst). */
TSQ_API tsq_status tsq_net_copy_params(tsq_net *dst, const tsq_net *src);

/*! tsq_net_layer_count() / tsq_net_layer() :
 *  The number of layers, and a borrowed pointer to layer `index`.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (index). */
TSQ_API tsq_status tsq_net_layer_count(const tsq_net *net, int32_t *count);
TSQ_API tsq_status tsq_net_layer(tsq_net *net, int32_t index, tsq_layer **layer);

/*! tsq_net_output_shape() :
 *  The sample shape of the last layer's output (the input shape while the
 *  net is empty). shape holds `capacity` entries (3 suffices).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_TOO_SMALL. */
TSQ_API tsq_status tsq_net_output_shape(const tsq_net *net, int64_t *shape, int32_t capacity,
                                        int32_t *ndim);

/*! tsq_net_forward() :
 *  Runs the network on x (f32, N x sample shape: either shape (N, ...) with
 *  the sample dimensions, or any shape whose first dimension is N and
 *  whose element count is N times the sample size) and writes the output
 *  to y (f32, N x output size elements, first dimension N). train = 1 uses
 *  batch statistics (and updates BN running statistics); train = 0 is
 *  inference. The activations are kept for tsq_net_backward().
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE (x or y does
 *  not fit: wrong sample size, batch sizes differ), TSQ_ERR_STATE (no
 *  layers), TSQ_ERR_NOT_FINITE (NaN/Inf in x), TSQ_ERR_NO_MEMORY.
 *  The parameters are not checked: a NaN parameter gives NaN outputs, or
 *  finite ones where a ReLU or max-pool drops it (train_step checks them).
 *  Nor are the outputs: activations that overflow float may give Inf/NaN. */
TSQ_API tsq_status tsq_net_forward(tsq_net *net, const tsq_tensor *x, tsq_tensor *y,
                                   int32_t train);

/*! tsq_net_backward() :
 *  Back-propagates dy (f32, the shape of the last forward's output) through
 *  the last forward. Parameter gradients are OVERWRITTEN with this batch's
 *  (no accumulation across calls); dx (may be NULL) receives the gradient
 *  with respect to the input, shaped like x.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE (dy or dx size
 *  differs from the last forward's batch), TSQ_ERR_STATE (no forward since
 *  the last change of the net), TSQ_ERR_NOT_FINITE (NaN in dy),
 *  TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_backward(tsq_net *net, const tsq_tensor *dy, tsq_tensor *dx);

/*! tsq_net_loss_backward() :
 *  After a forward, computes the mean softmax cross-entropy of the output
 *  (which must be (N, K) logits) against labels[0..n-1] and back-propagates
 *  it, filling the parameter gradients, without updating anything. For a
 *  host that runs its own optimiser. loss and correct may be NULL.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (no forward), TSQ_ERR_SHAPE
 *  (the output is not a vector per sample), TSQ_ERR_INVALID (n differs from
 *  the batch, a label outside 0..K-1), TSQ_ERR_NOT_FINITE (non-finite
 *  logits), TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_loss_backward(tsq_net *net, const int32_t *labels, int64_t n,
                                         double *loss, int64_t *correct);

/* ---- optimisers and learning-rate schedules ---- */

/*! tsq_net_set_optimizer_sgd() :
 *  SGD with momentum mu, optional Nesterov, and L2 weight decay wd (added to
 *  the gradient of weight tensors only: not biases, BN, alpha):
 *     g = grad + wd w;  v = mu v + g;  w -= lr (nesterov ? g + mu v : v).
 *  Replaces any optimiser; its moments and the step count start from 0.
 *  lr > 0 and <= 1e3, 0 <= mu < 1, wd in
 *  [0, 1], nesterov 0 or 1 (needs mu > 0).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_set_optimizer_sgd(tsq_net *net, double lr, double momentum,
                                             int32_t nesterov, double weight_decay);

/*! tsq_net_set_optimizer_adam() :
 *  Adam (Kingma & Ba) with bias correction; wd as for SGD (L2 added to the
 *  gradient). 0 <= beta1, beta2 < 1, eps in (0, 1].
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_set_optimizer_adam(tsq_net *net, double lr, double beta1,
                                              double beta2, double eps, double weight_decay);

/* Learning-rate schedules, over optimiser steps (the host turns epochs into
 * steps: the library never sees epochs). */
enum {
    TSQ_LR_CONSTANT = 0, /* lr */
    TSQ_LR_STEP = 1,     /* lr * gamma^floor(t / step_size) */
    TSQ_LR_COSINE = 2    /* min + (lr - min) (1 + cos(pi min(t, T) / T)) / 2 */
};

/*! tsq_net_set_lr_schedule() :
 *  kind TSQ_LR_CONSTANT (other arguments ignored); TSQ_LR_STEP with
 *  `steps` = step_size >= 1 and `param` = gamma in (0, 1]; TSQ_LR_COSINE
 *  with `steps` = T >= 1 and `param` = the final lr in [0, lr]. The step
 *  counter t is the number of optimiser updates made so far.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID, TSQ_ERR_STATE (no
 *  optimiser set). */
TSQ_API tsq_status tsq_net_set_lr_schedule(tsq_net *net, int32_t kind, int64_t steps,
                                           double param);

/*! tsq_net_get_lr() : the learning rate the next update will use.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (no optimiser). */
TSQ_API tsq_status tsq_net_get_lr(const tsq_net *net, double *lr);

/*! tsq_net_step_count() / tsq_net_set_step_count() :
 *  The optimiser's update counter t (drives the schedule and Adam's bias
 *  correction); setting it lets a host resume a schedule.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (negative, or above 2^62
 *  so that counting updates cannot overflow). */
TSQ_API tsq_status tsq_net_step_count(const tsq_net *net, int64_t *steps);
TSQ_API tsq_status tsq_net_set_step_count(tsq_net *net, int64_t steps);

/*! tsq_net_update() :
 *  One optimiser update of every trainable parameter from its current
 *  gradient, then t += 1. For hosts that compute gradients themselves.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (no optimiser set),
 *  TSQ_ERR_NOT_FINITE (a gradient is NaN/Inf: nothing is updated). */
TSQ_API tsq_status tsq_net_update(tsq_net *net);

/* ---- the caller-driven loop ---- */

/*! tsq_net_train_step() :
 *  One training step on one batch: forward in train mode, mean softmax
 *  cross-entropy against labels[0..n-1], backward, one optimiser update.
 *  x is (N, sample shape) f32 with N == n. Before touching anything it
 *  checks x (shape, finite), the labels (count, range) and that the
 *  parameters are finite; a non-finite loss stops the step before the
 *  update. loss and correct (number of argmax hits, before the update) may
 *  be NULL.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE, TSQ_ERR_STATE
 *  (no optimiser set, no layers), TSQ_ERR_INVALID (label count or range),
 *  TSQ_ERR_NOT_FINITE (input, parameter, loss), TSQ_ERR_NO_MEMORY. On any
 *  error no parameter is updated; after TSQ_ERR_NO_MEMORY the batch-norm
 *  running statistics before the failing layer may have seen the batch. */
TSQ_API tsq_status tsq_net_train_step(tsq_net *net, const tsq_tensor *x,
                                      const int32_t *labels, int64_t n, double *loss,
                                      int64_t *correct);

/*! tsq_net_set_distillation() / tsq_net_train_step_distill() :
 *  Training against a teacher's logits as well as the labels (knowledge
 *  distillation): tsq_net_train_step_distill is tsq_net_train_step with the
 *  loss
 *    (1 - w) CE(z, y) + w T^2 (1/N) sum_i KL(softmax(t_i / T) || softmax(z_i / T))
 *  where t = teacher_logits (f32, N x classes elements: the host runs its
 *  teacher, e.g. the FP32 net, on the same batch with tsq_net_forward in
 *  eval mode), T the temperature (0.05..100) and w the weight (0..1) of
 *  tsq_net_set_distillation. *loss is that mixed loss.
 *  @return set: TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID. Step: as
 *  tsq_net_train_step, plus TSQ_ERR_NULL (teacher_logits), TSQ_ERR_STATE
 *  (tsq_net_set_distillation never called), TSQ_ERR_DTYPE, TSQ_ERR_SHAPE
 *  and TSQ_ERR_NOT_FINITE for teacher_logits. */
TSQ_API tsq_status tsq_net_set_distillation(tsq_net *net, double temperature, double weight);
TSQ_API tsq_status tsq_net_train_step_distill(tsq_net *net, const tsq_tensor *x,
                                              const int32_t *labels, int64_t n,
                                              const tsq_tensor *teacher_logits, double *loss,
                                              int64_t *correct);

/*! tsq_net_evaluate() :
 *  Forward in eval mode on one batch. Any of the outputs may be NULL:
 *  *loss (mean cross-entropy; needs labels), *correct (needs labels),
 *  predictions[0..N-1] (argmax per sample). labels may be NULL (then n is
 *  ignored and loss/correct must be NULL). The host sums over its batches.
 *  @return as tsq_net_train_step, without the optimiser condition. */
TSQ_API tsq_status tsq_net_evaluate(tsq_net *net, const tsq_tensor *x, const int32_t *labels,
                                    int64_t n, double *loss, int64_t *correct,
                                    int32_t *predictions);

/* ---- parameters, for a host's own optimiser ---- */

/*! tsq_net_param_count() / tsq_net_param() :
 *  All trainable parameters of all layers, in layer order (layer_index
 *  receives the layer's position, and name the parameter's name). value and
 *  grad are borrowed as in tsq_layer_param(); outputs may be NULL.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (index). */
TSQ_API tsq_status tsq_net_param_count(const tsq_net *net, int32_t *count);
TSQ_API tsq_status tsq_net_param(tsq_net *net, int32_t index, tsq_tensor **value,
                                 tsq_tensor **grad, int32_t *layer_index, const char **name);

/* ---- rewrites ---- */

/*! tsq_net_fold_batchnorm() :
 *  Folds every batch-norm that directly follows a dense, conv2d or low-bit
 *  layer into it (eval-mode affine: W' = s W, b' = s (b - mean) + beta with
 *  s = gamma / sqrt(var + eps); low-bit layers fold s into alpha, flipping
 *  codes where s < 0) and removes the batch-norm. Eval outputs are
 *  unchanged up to float rounding. Drops the optimiser's moments (its
 *  settings and step count stay), as every change of the layer list does.
 *  *folded (may be NULL) receives the number of batch-norms removed.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_fold_batchnorm(tsq_net *net, int32_t *folded);

/*! tsq_net_replace_layer() :
 *  Replaces layer `index` by `layer`, which must have the same sample input
 *  shape and output shape. On success the net owns the new layer and frees
 *  the old one. Drops the optimiser's moments.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (index), TSQ_ERR_SHAPE,
 *  TSQ_ERR_STATE (layer already owned), TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_replace_layer(tsq_net *net, int32_t index, tsq_layer *layer);

/*! tsq_net_remove_layer() :
 *  Removes (and frees) layer `index`, which must map its input shape to the
 *  same output shape (e.g. ReLU, batch-norm, quantizer). Drops the
 *  optimiser's moments.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (index), TSQ_ERR_SHAPE,
 *  TSQ_ERR_NO_MEMORY (nothing removed). */
TSQ_API tsq_status tsq_net_remove_layer(tsq_net *net, int32_t index);

/*! tsq_net_insert_layer() :
 *  Inserts `layer` before position `index` (0..count); its output shape
 *  must equal its input shape (e.g. a quantizer after a batch-norm).
 *  On success the net owns it. Drops the optimiser's moments.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID, TSQ_ERR_SHAPE,
 *  TSQ_ERR_STATE, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_insert_layer(tsq_net *net, int32_t index, tsq_layer *layer);

/*! tsq_net_layer_output() :
 *  Copies the output of layer `index` in the last forward (or of the
 *  partial forwards that tsq_net_learn_codes / tsq_net_fit_transform run)
 *  into out (f32, batch x the layer's output sample size elements); index
 *  -1 gives the net's input. For hosts that inspect activations (e.g. to
 *  draw histograms).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (index), TSQ_ERR_STATE (no
 *  forward since the net last changed), TSQ_ERR_DTYPE, TSQ_ERR_SHAPE (size). */
TSQ_API tsq_status tsq_net_layer_output(tsq_net *net, int32_t index, tsq_tensor *out);

/* ------------------------------------------------------------------ */
/* Network-level TSQ (caller-driven)                                    */
/* ------------------------------------------------------------------ */

/* The net's conversion options: the settings of the network-level TSQ
 * calls (tsq_net_learn_codes, tsq_net_fit_transform), the 0x0600 family,
 * set with tsq_net_set_conversion_option / get / bounds. ACT_BITS,
 * EPS_MODE, EPS and SPARSITY are those of the quantizers learn_codes
 * makes: their bounds and defaults are the quantizer's (TSQ_QUANTIZER_*).
 * Step-2 (regressor) options live on the net's regressor, see
 * tsq_net_tsq_regressor(). */
enum {
    TSQ_NET_TSQ_ACT_BITS = 0x0601,    /* activation bits of new quantizers, 1..8, default 2 */
    TSQ_NET_TSQ_PER_CHANNEL = 0x0602, /* 1: one (eps, delta) per channel; 0/1, default 0 */
    TSQ_NET_TSQ_EPS_MODE = 0x0603,    /* TSQ_EPS_FIXED/SPARSITY/JOINT/PLAIN, default TSQ_EPS_JOINT */
    TSQ_NET_TSQ_EPS = 0x0604,         /* eps of TSQ_EPS_FIXED, [0, FLT_MAX], default 0.32 */
    TSQ_NET_TSQ_SPARSITY = 0x0605,    /* zero fraction of TSQ_EPS_SPARSITY, [0, 1], default 0.63 */
    /* Rows per image a convolution feeds to the regressor: 0 (default) all
     * output positions, else this many, drawn at random (the same ones in
     * every pass, from the context's seed): 0..2^20. */
    TSQ_NET_TSQ_POSITIONS = 0x0606,
    /* 1: tsq_net_learn_codes fits the quantizers one at a time in network
     * order, one pass of the caller's batches each, every one observing its
     * input with the earlier ones already in place (so it is fitted to what
     * it sees in training); the caller feeds passes until *done is 1, as for
     * tsq_net_fit_transform. 0 (default): one pass over the FP32 network
     * fits them all. 0/1. */
    TSQ_NET_TSQ_SEQUENTIAL = 0x0607,
    /* MiB that tsq_net_fit_transform may keep, for the layer being
     * converted, of each batch's regressor rows (with a copy of the batch
     * to recognise it): a later pass given the same batch at the same place
     * feeds them again instead of running the nets up to the layer. The
     * results are the same; 0 keeps nothing (least memory, every pass runs
     * the nets). Past the budget, batches are made afresh each pass.
     * 0..2^20, default 512. */
    TSQ_NET_TSQ_KEEP_ROWS_MIB = 0x0608,
    /* Where a converted layer's shadow weights S (what fine-tuning trains;
     * codes = rint(S / alpha)) start. h > 0 (default 0.45): the step-1
     * weights, batch-norm folded, in the layer's units, clipped to within
     * h * alpha_c of alpha_c * code, so they keep what the full-precision
     * weights knew (a weight the ternary fit barely rounded sits near its
     * bin's edge and flips under a small gradient). 0: alpha_c * code, the
     * centres of the bins. The codes, and hence every output, are the same
     * either way. [0, 0.49]. */
    TSQ_NET_TSQ_SHADOW_CLIP = 0x0609
};

/*! tsq_net_set_conversion_option() / tsq_net_get_conversion_option() /
 *  tsq_net_conversion_option_bounds() :
 *  The net's conversion options (TSQ_NET_TSQ_*, above). Changing them
 *  during a tsq_net_learn_codes / tsq_net_fit_transform session is
 *  refused. Reading an option never set gives its default.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key, a key of
 *  another family, NaN, a value out of bounds or not integral where it must
 *  be), TSQ_ERR_STATE (session), TSQ_ERR_NO_MEMORY (set: the first call on
 *  a net allocates its conversion state). */
TSQ_API tsq_status tsq_net_set_conversion_option(tsq_net *net, int32_t key, double value);
TSQ_API tsq_status tsq_net_get_conversion_option(const tsq_net *net, int32_t key,
                                                 double *value);
TSQ_API tsq_status tsq_net_conversion_option_bounds(int32_t key, double *lo, double *hi);

/*! tsq_net_tsq_regressor() :
 *  A borrowed pointer to the regressor that tsq_net_fit_transform uses for
 *  every converted layer: set its options (weight bits or alphabet, rounds,
 *  lambda, ...) with the tsq_regressor_* calls before the session starts.
 *  Its output quantizer and, for a layer without a quantizer after it, its
 *  loss (linear then) are set per layer by tsq_net_fit_transform.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_net_tsq_regressor(tsq_net *net, tsq_regressor **reg);

/*! tsq_net_learn_codes() :
 *  Step 1 of TSQ on a network, driven by the caller: put (or refit) a
 *  sparse activation quantizer at every selected ReLU / quantizer layer
 *  (TSQ_LAYER_OPT_TSQ_SELECT; default all), fitted on the activations
 *  entering it. Feed the calibration batches in turn, with last = 1 on the
 *  final one; that call fits every quantizer (options TSQ_NET_TSQ_*),
 *  replaces each selected ReLU by a quantizer layer (values mode) or
 *  updates the existing quantizers, and writes 1 to *done (0 before).
 *  The net runs in eval mode. Then train the net with the quantizers in
 *  place (TSQ step 1) with tsq_net_train_step.
 *  x: f32 (N, sample shape) batch, as for tsq_net_forward. Do not change
 *  the net's layers between calls (that cancels the session: TSQ_ERR_STATE).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE, TSQ_ERR_STATE (a fit_transform session is running,
 *  the net changed, or nothing to quantize), TSQ_ERR_INVALID (last not
 *  0/1), TSQ_ERR_UNSUPPORTED (an existing per-channel quantizer with
 *  mixed bits), TSQ_ERR_NO_MEMORY. A failed call leaves the session
 *  running (the batch is not counted) except for TSQ_ERR_STATE, and except
 *  when the final call (last = 1) fails while fitting or installing the
 *  quantizers: the session then ends with the net unchanged (start again;
 *  with TSQ_NET_TSQ_SEQUENTIAL, the quantizers of the passes before stay
 *  installed). Each fitted quantizer is logged at level 3 (info) through
 *  the context's log callback. The final call reports
 *  TSQ_PROGRESS_NET_LEARN_CODES (and each quantizer's
 *  TSQ_PROGRESS_QUANTIZER_FIT) to the context's progress callback; a
 *  cancel there returns TSQ_ERR_CANCELLED and ends the session with the
 *  net unchanged, as other failures of the final call. */
TSQ_API tsq_status tsq_net_learn_codes(tsq_net *net, const tsq_tensor *x, int32_t last,
                                       int32_t *done);

/*! tsq_net_fit_transform() :
 *  Step 2 of TSQ on a network, driven by the caller, layer by layer: each
 *  selected dense/conv layer (TSQ_LAYER_OPT_TSQ_SELECT; default all but the
 *  first and the last) is fitted by the net's regressor with
 *    X = the codes entering it, produced by the layers converted so far
 *        (or its float input when no quantizer feeds it),
 *    Y = the codes of the quantizer after it in the step-1 net (the net as
 *        it was when the session began), P = the pre-activations there (the
 *        output of its batch-norm, if any), where the regressor starts,
 *    W_init = its weights with the batch-norm folded in, in code units,
 *  and then replaced by a low-bit layer holding (w, alpha, b): the
 *  batch-norm is folded into (alpha, b) and removed, and the quantizer
 *  feeding it switched to codes output. A layer with no quantizer after it
 *  is fitted with the linear loss against P.
 *  The caller feeds its calibration batches pass after pass, in the same
 *  order, with last = 1 on the final batch of each pass, until *done is 1:
 *      do for (b = 0; b < nb; b++) tsq_net_fit_transform(net, x[b], b == nb-1, &done);
 *      while (!done);
 *  About 1 + (rounds + 1) passes per converted layer.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE, TSQ_ERR_STATE (learn_codes session running, the net
 *  changed, nothing selected to convert), TSQ_ERR_INVALID,
 *  TSQ_ERR_UNSUPPORTED (a per-channel quantizer with mixed bits),
 *  TSQ_ERR_NO_DATA, TSQ_ERR_NO_MEMORY, or any status of the regressor's
 *  calls (whose message is passed on), TSQ_ERR_CANCELLED (by the context's
 *  progress callback, which sees TSQ_PROGRESS_NET_FIT_TRANSFORM when the
 *  session starts and when a layer's fit is done, before the layer is
 *  replaced, and each layer's TSQ_PROGRESS_REGRESSOR_PASS). After an error
 *  in end of pass, a cancel included, the session is cancelled (the layers
 *  converted so far stay converted, the current one is not replaced). */
TSQ_API tsq_status tsq_net_fit_transform(tsq_net *net, const tsq_tensor *x, int32_t last,
                                         int32_t *done);

/*! tsq_net_convert_qat() :
 *  Ends joint QAT (TSQ_LAYER_OPT_QAT_WEIGHT_BITS): every dense/conv2d layer
 *  in QAT mode becomes a low-bit layer with the codes and scales its
 *  forward used (y unchanged), quantizer layers with learned delta go back
 *  to fixed parameters, and then, for each converted layer fed by a
 *  per-tensor quantizer (through max-pools and flattens only), the
 *  quantizer is switched to codes output and its delta folded into alpha,
 *  and a batch-norm right after the layer is folded into alpha and b.
 *  The result is what tsq_net_fit_transform makes: the plan and the model
 *  file take it. Eval outputs are unchanged up to float rounding.
 *  *converted (may be NULL) gets the number of layers converted.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (a TSQ session is running),
 *  TSQ_ERR_NOT_FINITE (a weight is NaN/Inf: the net unchanged),
 *  TSQ_ERR_NO_MEMORY (before the first replacement the net is unchanged;
 *  after it, the layers converted so far stay converted). A net whose
 *  quantizers learn delta cannot be saved (the model format has no place
 *  for the parameter): convert it first. */
TSQ_API tsq_status tsq_net_convert_qat(tsq_net *net, int32_t *converted);

/*! tsq_net_tsq_cancel() : ends a running learn_codes / fit_transform
 *  session without finishing it (layers already converted stay so).
 *  @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_net_tsq_cancel(tsq_net *net);

/* Stages reported by tsq_net_tsq_progress. */
enum { TSQ_NET_TSQ_IDLE = 0, TSQ_NET_TSQ_LEARNING = 1, TSQ_NET_TSQ_FITTING = 2 };

/*! tsq_net_tsq_progress() :
 *  The session's stage (TSQ_NET_TSQ_*), the layer being fitted (0-based,
 *  among *units selected layers) and the passes it has had. Outputs may be
 *  NULL. After a finished fit_transform: stage idle, unit = units.
 *  @return TSQ_OK, TSQ_ERR_NULL. */
TSQ_API tsq_status tsq_net_tsq_progress(const tsq_net *net, int32_t *stage, int32_t *unit,
                                        int32_t *units, int32_t *passes);

/*! tsq_net_tsq_history() :
 *  The regressor history (series TSQ_HISTORY_*, see regressor.h) of
 *  converted layer `unit` of the last tsq_net_fit_transform session, kept
 *  until the next session begins. *layer_index (may be NULL) gets the
 *  position the layer had in the step-1 net. values may be NULL (then only
 *  *count is written).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unit or series),
 *  TSQ_ERR_STATE (that layer is not finished), TSQ_ERR_TOO_SMALL. */
TSQ_API tsq_status tsq_net_tsq_history(const tsq_net *net, int32_t unit, int32_t series,
                                       double *values, int32_t capacity, int32_t *count,
                                       int32_t *layer_index);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_NN_H */
