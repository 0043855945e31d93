/*
 * libtsq - regressor.h: Step 2 of TSQ, the low-bit weight regressor and
 * tsq_fit_transform (docs/method.md §3). docs/regressor.md explains the
 * solver.
 *
 * A layer maps input rows X (N samples x d columns: the codes of the
 * previous layer, or im2col patches for a convolution, see tsq_regressor_im2col_rows)
 * to C output channels. For every channel i the regressor finds low-bit
 * weights w_i in S^d (S the weight alphabet), a scale alpha_i > 0 and,
 * optionally, an offset b_i that minimise
 *
 *     quantized loss (default):  || y_i - Q(alpha_i X w_i + b_i) ||^2
 *     linear loss:               || t_i - (alpha_i X w_i + b_i) ||^2
 *
 * where y_i are the step-1 codes of the channel on the output quantizer's
 * levels (y = code * delta) and Q is that quantizer (tsq_regressor_set_quantizer
 * or tsq_regressor_set_levels). The linear loss is the objective of GPTQ and
 * BitSplit, for comparison; its target t is the pre-activation P when given,
 * else X W_init when W_init is given, else the dequantized codes delta * Y.
 * Both objectives are reported in the units of the layer's output values
 * (squared), summed over samples and channels.
 *
 * The solver relaxes Q with an auxiliary z and weight lambda and alternates
 * (docs/method.md §3.1-§3.4): alpha/b by least squares; w by coordinate
 * descent over
 * the shared Gram matrix X^T X, centred so that the offset is profiled out;
 * z elementwise, into the quantizer's bins shrunk by TSQ_REGRESSOR_MARGIN.
 * The first TSQ_REGRESSOR_LINEAR_ROUNDS rounds keep z at its start (P, else
 * X W_init, else delta Y); z-steps come after. It starts from the exact best
 * low-bit approximation of W_init (or of the least-squares solution when
 * W_init is NULL), evaluates the true objective of every iterate and keeps,
 * per channel, the best iterate seen: never worse than the start. With the
 * quantized loss a polish follows (TSQ_REGRESSOR_POLISH): each channel's w
 * fixed, alpha and b are searched on the true objective itself, which the
 * relaxation only approximates.
 *
 * A channel whose weights all end at 0 (e.g. its codes are all 0, so that
 * every output is b) gets alpha = 1: alpha multiplies nothing there.
 *
 * Data larger than memory: the fit is driven by the caller in passes over
 * the data (tsq_regressor_begin, then per pass tsq_regressor_feed for every
 * batch and tsq_regressor_end_pass, until it reports done). A pass only
 * accumulates sums (X^T X, X^T z, ...), which can be exported to and added
 * from an array of doubles, so that several processes can each feed a
 * shard and only sum d x d and d x C arrays (e.g. with MPI_Allreduce).
 * tsq_fit_transform runs the same protocol on in-memory data. The
 * per-channel solves of end_pass can be split too: with
 * tsq_regressor_set_share each process solves a block of the channels,
 * and after every end_pass the processes exchange their blocks' results
 * (tsq_regressor_share_export, e.g. MPI_Allgatherv, then
 * tsq_regressor_share_import, which reports done instead of end_pass).
 *
 * Memory: besides the caller's X, Y (and P), a fit holds O(d^2 + d C)
 * doubles, 4096 doubles per channel for the polish, and one batch of
 * TSQ_REGRESSOR_BATCH_ROWS rows in float.
 *
 * Threads: a regressor must not be used by two threads at once; distinct
 * regressors may. A fit spreads output channels and row blocks over the
 * context's TSQ_CONTEXT_THREADS threads; each thread's channels make their
 * own BLAS calls, so the BLAS should run one thread per call there
 * (OPENBLAS_NUM_THREADS=1). Results do not depend on the thread count.
 * Every call validates its arguments before it changes anything: when it
 * fails, its outputs and the caller's tensors are untouched and
 * tsq_regressor_errmsg() says what was wrong.
 */
#ifndef TSQ_REGRESSOR_H
#define TSQ_REGRESSOR_H

#include "quantizer.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsq_regressor tsq_regressor;

/* Values of TSQ_REGRESSOR_LOSS. */
enum {
    TSQ_LOSS_QUANTIZED = 1, /* || y - Q(alpha X w + b) ||^2, TSQ's step 2 */
    TSQ_LOSS_LINEAR = 2     /* || t - (alpha X w + b) ||^2, GPTQ/BitSplit */
};

/* Option keys of tsq_regressor_set_option / get_option / option_bounds: the
 * 0x0300 family (a key of another family, e.g. a quantizer's 0x02xx, is
 * refused with TSQ_ERR_INVALID). Values are doubles; integer options take
 * integral values. Options are read by tsq_regressor_begin (and
 * tsq_fit_transform): changing them while a fit is in progress is refused
 * with TSQ_ERR_STATE. */
enum {
    /* Symmetric k-bit weights, S = {-(2^(k-1) - 1) .. 2^(k-1) - 1}, k = 2..8.
     * k = 2 is ternary {-1, 0, +1}, the default. Reads 0 while a custom
     * alphabet (tsq_regressor_set_alphabet) is in use; setting it replaces
     * the custom alphabet. */
    TSQ_REGRESSOR_WEIGHT_BITS = 0x0301,
    /* 1: fit a per-channel offset b (a folded batch-norm), default; 0: b = 0. */
    TSQ_REGRESSOR_OFFSET = 0x0302,
    /* TSQ_LOSS_QUANTIZED (default) or TSQ_LOSS_LINEAR. */
    TSQ_REGRESSOR_LOSS = 0x0303,
    /* Rounds of alpha/b, w (and z) updates after the start, 0..100000,
     * default 10. */
    TSQ_REGRESSOR_ROUNDS = 0x0304,
    /* The first this many rounds hold z at its start ("linear" rounds);
     * later rounds take z-steps. 0..100000, default 3. Ignored by the linear
     * loss, whose rounds are all linear. */
    TSQ_REGRESSOR_LINEAR_ROUNDS = 0x0305,
    /* At most this many coordinate sweeps over w (each followed by an alpha
     * refit) per descent; a descent stops early when a sweep changes
     * nothing. A round runs one descent, then TSQ_REGRESSOR_RESTARTS more
     * restarted from the result with scaled alphas, keeping the best.
     * 1..10000, default 8. */
    TSQ_REGRESSOR_SWEEPS = 0x0306,
    /* lambda of the first z-step round, 1e-12..1e12, default 0.1. Round k
     * of the z-steps uses lambda0 * growth^(k-1). lambda weighs the move of
     * z away from the layer's output against the codes' squared error (both
     * in output units): below 1, z nearly always moves into its code's bin;
     * large values keep z at the output and end the progress. */
    TSQ_REGRESSOR_LAMBDA0 = 0x0307,
    /* lambda's growth per z-step round, 1..1000, default 1.1. */
    TSQ_REGRESSOR_LAMBDA_GROWTH = 0x0308,
    /* Early stop: the fit ends after a z-step round (or, with the linear
     * loss, any round) that changed no weight and moved every alpha and b
     * by less than this fraction (b relative to |b| + alpha). The true
     * objective is not used for this: it is piecewise constant in alpha and
     * b and often stays flat for rounds before it drops. 0..1, default
     * 1e-4; 0 runs every round. */
    TSQ_REGRESSOR_TOLERANCE = 0x0309,
    /* Rows processed at a time inside a pass (memory: this many rows of X
     * and of the C outputs in float). 16..1048576, default 1024. For u8 X
     * it is lowered when needed so that each batch's X^T X is exact in
     * float (rows * maxcode^2 <= 2^24). Does not change the results beyond
     * floating-point rounding. */
    TSQ_REGRESSOR_BATCH_ROWS = 0x030A,
    /* The z-step aims inside the bins: each bin of the output quantizer is
     * shrunk by this fraction of delta at its finite ends before z is
     * clamped into it (0.5 shrinks the inner bins to their centres, and the
     * two outer bins to half-lines starting half a step inside). With 0, as
     * in the method's z step, outputs on the wrong side of a boundary are
     * pulled only
     * onto it, and the refit converges to the boundary without crossing
     * it; see docs/regressor.md for the measurements. 0..0.5, default 0.5. */
    TSQ_REGRESSOR_MARGIN = 0x030B,
    /* Passes of the polish after the rounds (quantized loss only): with
     * each channel's best w fixed, alpha and b are searched on the true
     * objective ||y - Q(alpha X w + b)||^2 itself (docs/regressor.md,
     * "Polish"). Pass 1 builds a histogram of (X w, y) per channel, pass 2
     * checks on the data the 8 best (alpha, b) a search on it finds; passes
     * 3 and 4 do the same on finer histograms near each threshold; later
     * passes refine by a compass search on the true objective and end
     * early once no step is left. Each channel keeps its best candidate:
     * never worse than the rounds. 0..1000, default 4 (1 and 2 run the
     * first histogram and its check; 3 as 2); 0 turns the polish off. */
    TSQ_REGRESSOR_POLISH = 0x030C,
    /* Restarted descents per round: after the first coordinate descent,
     * this many more from its result with alpha scaled by 0.5, 0.7, 1.4 and
     * 2 (in that order), keeping the best. -1..4, default -1: 4 with the
     * linear loss, 0 with the quantized loss (whose polish gains more for
     * the time; docs/regressor.md, "Speed"). */
    TSQ_REGRESSOR_RESTARTS = 0x030D
};

/* Modes of tsq_regressor_stats_import. */
enum {
    TSQ_STATS_ADD = 1,    /* add the array to this regressor's sums */
    TSQ_STATS_REPLACE = 2 /* replace this regressor's sums by the array */
};

/* Series of tsq_regressor_history. Entry r is iterate r: 0 the start, r >= 1
 * the result of round r; after the last round, one entry per polish pass
 * that checked candidates on the data (its objective is the polished one;
 * its RELAXED entry repeats it, its LAMBDA entry is 0). Every value is
 * summed over the channels. */
enum {
    /* The true objective of iterate r (the quantized or linear loss). */
    TSQ_HISTORY_OBJECTIVE = 1,
    /* The objective of the best iterate per channel among 0..r; the fit's
     * result is the last entry. Never increases. */
    TSQ_HISTORY_BEST = 2,
    /* The objective round r's update minimised, at its end: for a linear
     * round || z0 - (alpha X w + b) ||^2; for a z-step round the relaxed
     * || y - Q(z) ||^2 + lambda || z - (alpha X w + b) ||^2 (z in the
     * closure of its bin). At a fixed lambda it never increases from one
     * z-step round to the next. Entry 0 is the linear one of the start. */
    TSQ_HISTORY_RELAXED = 3,
    /* lambda of round r (0 for the start and for linear rounds). */
    TSQ_HISTORY_LAMBDA = 4
};

/*! tsq_regressor_create() :
 *  Creates a regressor with default options (ternary weights, offsets,
 *  quantized loss) and no output quantizer. *out receives it, or NULL on
 *  failure (message on ctx).
 *  @return TSQ_OK, TSQ_ERR_NULL (ctx or out), TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_regressor_create(tsq_context *ctx, tsq_regressor **out);

/*! tsq_regressor_destroy() : frees the regressor, its fit state and results.
 *  Accepts NULL. */
TSQ_API void tsq_regressor_destroy(tsq_regressor *reg);

/*! tsq_regressor_errmsg() :
 *  @return the message of the last failed call on reg ("" after a call that
 *  succeeded), owned by reg and valid until its next call; a static
 *  "no regressor" for NULL. */
TSQ_API const char *tsq_regressor_errmsg(const tsq_regressor *reg);

/*! tsq_regressor_set_option() :
 *  Sets option `key` (TSQ_REGRESSOR_*) to `value`.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key, NaN, a value
 *  outside tsq_regressor_option_bounds(), not integral where it must be),
 *  TSQ_ERR_STATE (a fit is in progress). */
TSQ_API tsq_status tsq_regressor_set_option(tsq_regressor *reg, int32_t key, double value);

/*! tsq_regressor_get_option() : writes option `key`'s value to *value.
 *  @return TSQ_OK, TSQ_ERR_NULL (reg; or value, with a message on reg),
 *  TSQ_ERR_INVALID (unknown key, or a key of another family). */
TSQ_API tsq_status tsq_regressor_get_option(const tsq_regressor *reg, int32_t key,
                                            double *value);

/*! tsq_regressor_option_bounds() :
 *  Writes the inclusive range of option `key`'s values to *lo and *hi.
 *  Needs no regressor. Thread-safe.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (unknown key). */
TSQ_API tsq_status tsq_regressor_option_bounds(int32_t key, double *lo, double *hi);

/*! tsq_regressor_set_alphabet() :
 *  Uses the `count` integers values[0..count-1] as the weight alphabet S
 *  (any order; duplicates are merged). They must lie in -128..127 and hold
 *  at least 2 distinct values. A symmetric alphabet (v in S <=> -v in S)
 *  lets the solver flip a channel's sign to keep alpha > 0; with an
 *  asymmetric one alpha is only refit while it stays positive. The caller
 *  keeps `values`. TSQ_REGRESSOR_WEIGHT_BITS then reads 0.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (count < 1, a value out of
 *  range, fewer than 2 distinct values), TSQ_ERR_STATE (fit in progress). */
TSQ_API tsq_status tsq_regressor_set_alphabet(tsq_regressor *reg, const int32_t *values,
                                              int32_t count);

/*! tsq_regressor_get_alphabet() :
 *  Writes the alphabet in ascending order to values[0..*count-1]; capacity
 *  is the room in values (256 always suffices). With values NULL only
 *  *count is written.
 *  @return TSQ_OK, TSQ_ERR_NULL (reg; or count, with a message on reg),
 *  TSQ_ERR_TOO_SMALL (capacity < *count: *count is written, values is not). */
TSQ_API tsq_status tsq_regressor_get_alphabet(const tsq_regressor *reg, int32_t *values,
                                              int32_t capacity, int32_t *count);

/*! tsq_regressor_set_quantizer() :
 *  Copies the output quantizer's parameters (bits, and eps, delta per
 *  channel or per tensor) into the regressor; later changes to q do not
 *  reach it. A per-channel quantizer must have as many channels as the
 *  layer has outputs (checked when a fit starts). q must be fitted.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (q is not fitted, or a fit
 *  is in progress), TSQ_ERR_INVALID (unusable parameters),
 *  TSQ_ERR_NO_MEMORY (the previous quantizer stays). */
TSQ_API tsq_status tsq_regressor_set_quantizer(tsq_regressor *reg, const tsq_quantizer *q);

/*! tsq_regressor_set_levels() :
 *  Sets a per-tensor output quantizer directly: `bits` 1..8, eps finite and
 *  >= 0, delta finite and > 0 (with 1/delta and (2^bits - 1) delta finite).
 *  Codes are then 0 .. 2^bits - 1 and the levels code * delta.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID, TSQ_ERR_NOT_FINITE,
 *  TSQ_ERR_STATE (fit in progress). */
TSQ_API tsq_status tsq_regressor_set_levels(tsq_regressor *reg, int32_t bits, float eps,
                                            float delta);

/*! tsq_fit_transform() :
 *  Step 2 of TSQ on in-memory data, as one call.
 *  X: N x d, u8 (activation codes of the previous layer; alpha then absorbs
 *     that layer's delta) or f32.
 *  Y: N x C step-1 codes of this layer, u8, or f32 holding integer codes;
 *     every code must be <= 2^bits - 1 of its channel's quantizer. Required
 *     by the quantized loss; by the linear loss only when it is the target
 *     (no P, no W_init), else it may be NULL.
 *  W_init: d x C f32 full-precision weights, or NULL (start from the least
 *     squares solution). For a convolution with weight C x C_in x kh x kw,
 *     W_init is its reshape to C x d, transposed.
 *  P: N x C f32 step-1 pre-activations (Q(P) = Y), or NULL.
 *  W_out: d x C i8, receives w. alpha_out: C f32, receives alpha > 0.
 *  b_out: C f32 or NULL, receives b (zeros without offsets).
 *  The three outputs must be distinct tensors over disjoint memory.
 *  C is taken from Y (else P, else W_init, else alpha_out), and a W_out
 *  whose shape is not d x C is named in the message.
 *  objective: receives the final objective (may be NULL).
 *  The caller keeps every tensor; nothing is written unless the call
 *  succeeds. The per-round history stays queryable on reg afterwards. A
 *  call refused for its arguments keeps the previous fit's results; one
 *  that fails later (all-zero X, out of memory) leaves no fit.
 *  @return TSQ_OK, TSQ_ERR_NULL (reg, X, W_out or alpha_out, or a tensor
 *  the loss needs), TSQ_ERR_DTYPE, TSQ_ERR_SHAPE (sizes that do not agree,
 *  e.g. N of X != N of Y), TSQ_ERR_NOT_FINITE (NaN or Inf in X, Y, P or
 *  W_init), TSQ_ERR_INVALID (a code of Y above its quantizer's top code,
 *  a non-integral code in an f32 Y, or outputs that share memory),
 *  TSQ_ERR_STATE (no output
 *  quantizer while one is needed, a per-channel quantizer with a channel
 *  count other than C, or a streamed fit in progress), TSQ_ERR_NO_DATA (X
 *  is all zero), TSQ_ERR_NO_MEMORY. Denormal or huge X are accepted; when a
 *  fitted alpha or b does not fit in float (e.g. X of denormals, alpha ~
 *  1/|X|) the call fails with TSQ_ERR_NOT_FINITE and writes nothing.
 *  Each pass over X is reported as TSQ_PROGRESS_REGRESSOR_PASS to the
 *  context's progress callback; when it cancels, the call returns
 *  TSQ_ERR_CANCELLED, writes nothing and leaves no fit. */
TSQ_API tsq_status tsq_fit_transform(tsq_regressor *reg, const tsq_tensor *X,
                                     const tsq_tensor *Y, const tsq_tensor *W_init,
                                     const tsq_tensor *P, tsq_tensor *W_out,
                                     tsq_tensor *alpha_out, tsq_tensor *b_out,
                                     double *objective);

/* ------------------------------------------------------------------ */
/* Caller-driven fits over data larger than memory                     */
/* ------------------------------------------------------------------ */

/*! tsq_regressor_begin() :
 *  Starts a fit of a layer with d inputs and C outputs, dropping any
 *  previous result. W_init is as for tsq_fit_transform (copied; the caller
 *  keeps it). with_preact = 1 promises a P with every batch of the first
 *  pass (TSQ's step-1 pre-activations, the z start); 0 means no P.
 *  Then, pass after pass: feed every batch (tsq_regressor_feed), optionally
 *  merge the pass's sums with other processes (tsq_regressor_stats_*), and
 *  call tsq_regressor_end_pass, until it sets *done. Every pass must see
 *  the same rows (in any batching and order). The quantized loss needs
 *  1 + (rounds + 1) + polish passes at most, the linear loss one.
 *  @return TSQ_OK, TSQ_ERR_NULL (reg), TSQ_ERR_SHAPE (d or C < 1, W_init
 *  not d x C), TSQ_ERR_DTYPE (W_init not f32), TSQ_ERR_INVALID
 *  (with_preact not 0 or 1), TSQ_ERR_NOT_FINITE (W_init), TSQ_ERR_STATE (no
 *  output quantizer while one is needed, or a per-channel quantizer whose
 *  channel count is not C), TSQ_ERR_OVERFLOW, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_regressor_begin(tsq_regressor *reg, int64_t d, int64_t C,
                                       const tsq_tensor *W_init, int32_t with_preact);

/*! tsq_regressor_feed() :
 *  Adds one batch to the current pass: X (n x d, u8 or f32), Y (n x C, as in
 *  tsq_fit_transform; may be NULL where the loss does not need it) and P
 *  (n x C f32; required in the first pass when begin had with_preact = 1,
 *  ignored afterwards, may then be NULL). The batch is fully validated
 *  before anything is added. The caller keeps the tensors.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_NOT_FINITE, TSQ_ERR_INVALID (codes), TSQ_ERR_STATE (no fit in
 *  progress, or the fit is done). */
TSQ_API tsq_status tsq_regressor_feed(tsq_regressor *reg, const tsq_tensor *X,
                                      const tsq_tensor *Y, const tsq_tensor *P);

/*! tsq_regressor_end_pass() :
 *  Ends the current pass: updates the iterate from the pass's sums, and
 *  writes 1 to *done when the fit is finished (results ready, see
 *  tsq_regressor_result), else 0 (feed the data again).
 *  On TSQ_ERR_NO_DATA, TSQ_ERR_SHAPE or TSQ_ERR_INVALID the fit is
 *  abandoned (begin again). With the context's log callback, a line per
 *  pass at info level (3) and the objectives at debug level (4). Each
 *  ended pass is reported as TSQ_PROGRESS_REGRESSOR_PASS to the context's
 *  progress callback; a cancel there abandons the fit too.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (no fit in progress, or done),
 *  TSQ_ERR_NO_DATA (no rows in the pass, or X all zero), TSQ_ERR_SHAPE (a
 *  pass saw a different number of rows than the first), TSQ_ERR_INVALID
 *  (imported sums whose X^T X is not positive semi-definite, which no data
 *  give: e.g. an array that is not a sum of exports), TSQ_ERR_NO_MEMORY,
 *  TSQ_ERR_CANCELLED (by the progress callback). */
TSQ_API tsq_status tsq_regressor_end_pass(tsq_regressor *reg, int32_t *done);

/*! tsq_regressor_stats_size() :
 *  Writes to *count the number of doubles in the current pass's sums: in
 *  the first pass 1 + d + d(d+1)/2, plus d C + 2 C when z0 is P or delta Y,
 *  or C when it is X W_init with the quantized loss and offsets; in later
 *  passes 1 + C, plus d C + 3 C in z-step passes; in polish passes 1 + at
 *  most 4096 C (histograms) or 1 + 9 C (candidates) (docs/regressor.md).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (no pass in progress). */
TSQ_API tsq_status tsq_regressor_stats_size(const tsq_regressor *reg, int64_t *count);

/*! tsq_regressor_stats_export() :
 *  Copies the current pass's sums to out[0..count-1]; count must equal
 *  tsq_regressor_stats_size(). Summing the arrays of regressors that were
 *  fed disjoint shards of the data gives the array of the whole data.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE, TSQ_ERR_TOO_SMALL (count
 *  differs from the size; nothing is written). */
TSQ_API tsq_status tsq_regressor_stats_export(const tsq_regressor *reg, double *out,
                                              int64_t count);

/*! tsq_regressor_stats_import() :
 *  Adds (TSQ_STATS_ADD) in[0..count-1] to the current pass's sums, or
 *  replaces them by it (TSQ_STATS_REPLACE), e.g. with the MPI_Allreduce sum
 *  of every process's export. All processes must have begun with the same
 *  d, C, W_init, with_preact and options, and must import the same sums:
 *  each then computes the same iterate.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE, TSQ_ERR_INVALID (unknown
 *  mode), TSQ_ERR_TOO_SMALL (count differs from the size),
 *  TSQ_ERR_NOT_FINITE (the array holds NaN or Inf; nothing is changed). */
TSQ_API tsq_status tsq_regressor_stats_import(tsq_regressor *reg, const double *in,
                                              int64_t count, int32_t mode);

/* ------------------------------------------------------------------ */
/* Shares: the channels' solves spread over processes                  */
/* ------------------------------------------------------------------ */

/*! tsq_regressor_set_share() :
 *  Makes the next fit begun by tsq_regressor_begin solve only share
 *  `index` of `count` of the channels: the contiguous block
 *  floor(index C / count) .. floor((index + 1) C / count) - 1 (empty when
 *  count > C and the block has no channel). The processes of a sharded fit
 *  (same d, C, W_init, options, and the same summed statistics every pass,
 *  see tsq_regressor_stats_import) then each solve their block in
 *  tsq_regressor_end_pass and exchange the results after it
 *  (tsq_regressor_share_size / export / import); the fit is bit for bit
 *  the one with count = 1, on every process. count = 1 (the default) solves
 *  every channel, with no exchange. The linear loss solves in its single
 *  end_pass on every share (its exchange carries nothing).
 *  tsq_fit_transform ignores the share.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (count < 1, index outside
 *  0..count-1), TSQ_ERR_STATE (a fit is in progress). */
TSQ_API tsq_status tsq_regressor_set_share(tsq_regressor *reg, int32_t index, int32_t count);

/*! tsq_regressor_share_size() :
 *  After tsq_regressor_end_pass of a fit with more than one share: writes
 *  to *count the number of doubles in share `share`'s part of the pass's
 *  results (its channels times d + 4 after the start or a round, times 36
 *  after a polish search, 0 after other passes; docs/regressor.md). Every
 *  process computes every share's size alone (e.g. the counts of
 *  MPI_Allgatherv).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (share outside
 *  0..count-1), TSQ_ERR_STATE (no exchange is due). */
TSQ_API tsq_status tsq_regressor_share_size(const tsq_regressor *reg, int32_t share,
                                            int64_t *count);

/*! tsq_regressor_share_export() :
 *  Copies this regressor's part (its share's channels' results of the
 *  pass just ended) to out[0..count-1]; count must equal
 *  tsq_regressor_share_size() of its share (out may be NULL when it is 0).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (no exchange is due),
 *  TSQ_ERR_TOO_SMALL (count differs from the size; nothing is written). */
TSQ_API tsq_status tsq_regressor_share_export(const tsq_regressor *reg, double *out,
                                              int64_t count);

/*! tsq_regressor_share_import() :
 *  Takes every share's part, concatenated in share order (in[0..count-1],
 *  count the sum of the shares' sizes; e.g. the result of MPI_Allgatherv),
 *  completes the pass (the decisions that need every channel: the
 *  objectives recorded, the early stop, the polish's stages) and writes
 *  *done as tsq_regressor_end_pass does without shares: 1 when the fit is
 *  finished (tsq_regressor_result then works), else 0 (feed the next
 *  pass). Until this call, the feed, the statistics and end_pass are
 *  refused. Nothing is changed when it fails.
 *  @return TSQ_OK, TSQ_ERR_NULL (reg, done; in when count > 0),
 *  TSQ_ERR_STATE (no exchange is due), TSQ_ERR_TOO_SMALL (count differs
 *  from the total size), TSQ_ERR_NOT_FINITE (NaN or Inf in the array),
 *  TSQ_ERR_INVALID (a weight outside the alphabet, a flag other than 0 or
 *  1, a float value that is no float, or this share's own part differs
 *  from its results: parts out of order, or from another fit). */
TSQ_API tsq_status tsq_regressor_share_import(tsq_regressor *reg, const double *in,
                                              int64_t count, int32_t *done);

/*! tsq_regressor_result() :
 *  After a finished fit (tsq_regressor_end_pass set *done, or
 *  tsq_fit_transform succeeded): writes w (W_out, d x C i8), alpha
 *  (alpha_out, C f32), b (b_out, C f32, may be NULL) and the objective
 *  (may be NULL), as tsq_fit_transform does.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_INVALID (outputs that share memory),
 *  TSQ_ERR_STATE (no finished fit), TSQ_ERR_NOT_FINITE (alpha or b
 *  overflows float, as in tsq_fit_transform; nothing written). */
TSQ_API tsq_status tsq_regressor_result(tsq_regressor *reg, tsq_tensor *W_out,
                                        tsq_tensor *alpha_out, tsq_tensor *b_out,
                                        double *objective);

/*! tsq_regressor_history() :
 *  Writes series `series` (TSQ_HISTORY_*) of the current or last fit, one
 *  value per evaluated iterate (start included), to values[0..*count-1].
 *  With values NULL only *count is written. Available as soon as iterates
 *  are evaluated, so a streamed fit can be watched pass by pass.
 *  @return TSQ_OK, TSQ_ERR_NULL (reg; or count, with a message on reg),
 *  TSQ_ERR_INVALID (unknown series), TSQ_ERR_TOO_SMALL (capacity < *count;
 *  *count is written). */
TSQ_API tsq_status tsq_regressor_history(const tsq_regressor *reg, int32_t series,
                                         double *values, int32_t capacity, int32_t *count);

/*! tsq_regressor_channel_objectives() :
 *  After a finished fit, writes the objective of each channel's returned
 *  iterate to out[0..C-1] (count must be C).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_STATE (no finished fit),
 *  TSQ_ERR_TOO_SMALL (count != C). */
TSQ_API tsq_status tsq_regressor_channel_objectives(const tsq_regressor *reg, double *out,
                                                    int64_t count);

/* ------------------------------------------------------------------ */
/* Convolutions: rows of X (and of Y, P) from NCHW tensors              */
/* ------------------------------------------------------------------ */

/*! tsq_regressor_im2col_rows() :
 *  Builds the regressor's X for a convolution: input is N x C_in x H x W
 *  (u8 codes or f32); the kernel is kh x kw with strides (stride_h,
 *  stride_w) >= 1 and zero padding (pad_h, pad_w) >= 0, so the output has
 *  OH = (H + 2 pad_h - kh) / stride_h + 1 rows and OW likewise (both >= 1).
 *  Each output position p = oh * OW + ow of each image gives one row of
 *  d = C_in kh kw values, in the column order (c_in, i, j) of a weight
 *  C_out x C_in x kh x kw reshaped to C_out x d; padded cells are 0.
 *  positions: NULL for every position of every image (N OH OW rows, image
 *  by image), or N * npos indices in 0..OH*OW-1, npos of them per image
 *  (image n's at positions[n*npos ...]), giving N npos rows in that order
 *  (see tsq_regressor_im2col_sample_positions). npos is ignored when positions is NULL.
 *  *out receives a new tensor (rows x d, the input's dtype) owned by the
 *  caller (tsq_tensor_destroy), or NULL on failure (message on ctx).
 *  Uses the context's threads.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE (i8 input), TSQ_ERR_SHAPE
 *  (input not 4-D, kernel larger than the padded input), TSQ_ERR_INVALID
 *  (a kernel, stride or padding out of range, npos < 1, a position out of
 *  range), TSQ_ERR_OVERFLOW, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_regressor_im2col_rows(tsq_context *ctx, const tsq_tensor *input,
                                             int32_t kh, int32_t kw, int32_t stride_h,
                                             int32_t stride_w, int32_t pad_h, int32_t pad_w,
                                             const int64_t *positions, int64_t npos,
                                             tsq_tensor **out);

/*! tsq_regressor_im2col_output_rows() :
 *  The matching rows of a convolution's output (the Y codes or the P
 *  pre-activations): output is N x C x OH x OW (u8 or f32); row r of the
 *  result holds the C channels at the position that row r of
 *  tsq_regressor_im2col_rows() with the same positions (NULL or N*npos indices in
 *  0..OH*OW-1) describes. *out receives a new rows x C tensor of the same
 *  dtype, owned by the caller, or NULL (message on ctx).
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_DTYPE, TSQ_ERR_SHAPE,
 *  TSQ_ERR_INVALID, TSQ_ERR_OVERFLOW, TSQ_ERR_NO_MEMORY. */
TSQ_API tsq_status tsq_regressor_im2col_output_rows(tsq_context *ctx,
                                                    const tsq_tensor *output,
                                                    const int64_t *positions, int64_t npos,
                                                    tsq_tensor **out);

/*! tsq_regressor_im2col_sample_positions() :
 *  Chooses, for each of `images` images, npos distinct output positions out
 *  of `total` (= OH * OW) uniformly at random, and writes them in ascending
 *  order per image to positions[0 .. images*npos - 1]. The random stream
 *  comes from the context's seed (a new stream per call, see
 *  tsq_context_set_seed), so the same seed and call order repeat it.
 *  @return TSQ_OK, TSQ_ERR_NULL, TSQ_ERR_INVALID (images < 1, total < 1,
 *  npos < 1 or npos > total), TSQ_ERR_OVERFLOW (images * npos). */
TSQ_API tsq_status tsq_regressor_im2col_sample_positions(tsq_context *ctx, int64_t images,
                                                         int64_t total, int64_t npos,
                                                         int64_t *positions);

#ifdef __cplusplus
}
#endif
#endif /* TSQ_REGRESSOR_H */
