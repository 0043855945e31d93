/* Allocation-failure injection over a small end-to-end run.
 *
 * run_pipeline() drives a tiny network through the whole library:
 *   build    input 1x6x6: conv3x3-4, BN, ReLU, conv3x3-4, BN, ReLU, flatten,
 *            dense-3, SGD; two float training steps;
 *   step 1   tsq_net_learn_codes over two batches, a training step with the
 *            quantized activations;
 *   step 2   tsq_net_fit_transform (the second conv becomes low-bit), a
 *            fine-tuning step, an evaluation;
 *   deploy   tsq_net_save to a caller buffer, tsq_net_load, tsq_plan_create
 *            and tsq_plan_run (with an allocated and a caller workspace);
 *   alone    the standalone calls: tsq_quantizer_* (observe, fit, encode,
 *            decode, save/load, per channel), tsq_learn_codes, tsq_im2col_*,
 *            tsq_fit_transform, the streamed regressor, tsq_net_clone,
 *            tsq_net_fold_batchnorm, tsq_packed_weights_create,
 *            tsq_thresholds_create, tsq_lowbit_gemm.
 * A clean run counts its N allocations. Then, for EVERY k in 1..N (also
 * under TSQ_TEST_QUICK: the net is kept tiny instead), the run is repeated
 * with the k-th allocation refused, and for the call that saw the refusal:
 *   - it returns TSQ_ERR_NO_MEMORY, and its message (on the handle, or on the
 *     context for constructors and the context-reporting calls) is
 *     non-empty and says "memory";
 *   - the caller's images, labels, regressor data and the loaded model
 *     buffer are byte-identical to before, and the save buffer's guard bytes
 *     past the capacity given are untouched;
 *   - in the "retry" test, the same call then succeeds with allocation
 *     allowed (a session call whose failure ended its session restarts the
 *     session, as its documentation says), the whole run goes on to the end,
 *     and every result (evaluation predictions, plan outputs, codes, the
 *     regressor's weights) is bit-identical to the clean run's, except after
 *     a failed training step (batch-norm running statistics may have moved,
 *     see tsq_net_train_step); a failed training step changes no parameter;
 *   - in the "abort" test, every handle made so far is destroyed at once,
 *     in whatever state the failure left it;
 *   - th_context_done() then proves that nothing leaked.
 * Every k must hit a call (the allocation count is deterministic).
 */
#define TSQ_EXPERIMENTAL 1 /* the kernel-level calls */
#include "nn_testutil.h"
#include "tsq/experimental.h"

#include <ctype.h>
#include <stdio.h>

#define NB 2              /* calibration / training batches */
#define BS 8              /* images per batch */
#define NIMG (NB * BS)
#define IMG 36            /* 1 x 6 x 6 */
#define NCLS 3
#define RROWS 96          /* standalone regressor rows */
#define RD 9              /* ... inputs */
#define RC 4              /* ... outputs */
#define SAVE_CAP 65536
#define GUARD 64

enum { MODE_RETRY = 0, MODE_ABORT = 1 };
enum { PH_BUILD, PH_STEP1, PH_STEP2, PH_DEPLOY, PH_ALONE, PH_COUNT };
static const char *const phase_name[PH_COUNT] = {"build", "step 1", "step 2", "deploy",
                                                 "standalone"};

/* The caller's memory: inputs the library must never change. */
typedef struct {
    float images[NIMG * IMG];
    int32_t labels[NIMG];
    uint8_t rx[RROWS * RD];   /* regressor X codes */
    uint8_t ry[RROWS * RC];   /* regressor Y codes */
    uint8_t save[SAVE_CAP + GUARD];
    /* snapshots */
    float images0[NIMG * IMG];
    int32_t labels0[NIMG];
    uint8_t rx0[RROWS * RD], ry0[RROWS * RC];
    uint64_t saved;           /* bytes of the model in save[] (0: none yet) */
    uint8_t model0[SAVE_CAP]; /* the model as written, for the load checks */
} buffers;

/* Results compared with the clean run. */
typedef struct {
    float plan_y[BS * NCLS];
    float plan_y2[BS * NCLS];
    int32_t pred[BS];
    int8_t rw[RD * RC];
    float ralpha[RC], rb[RC];
    int8_t sw[RD * RC];
    uint8_t codes[BS * IMG];
} results;

typedef struct {
    th_alloc_stats st;
    tsq_context *ctx;
    int mode;
    int64_t k;       /* the refused allocation, 0: none */
    int hit;         /* the refusal happened */
    int phase, hit_phase;
    char hit_call[48];
    /* handles */
    tsq_tensor *xb[NB], *y, *t[12];
    tsq_layer *layer; /* created, not yet owned by a net */
    tsq_net *net, *loaded, *clone;
    tsq_plan *plan;
    tsq_quantizer *q, *qc, *ql;
    tsq_regressor *reg, *sreg;
    tsq_packed_weights *pw;
    tsq_thresholds *th;
    results res;
} run_state;

static int mentions_memory(const char *msg)
{
    char low[256];
    size_t i;
    for (i = 0; msg[i] && i + 1 < sizeof low; i++)
        low[i] = (char)tolower((unsigned char)msg[i]);
    low[i] = '\0';
    return strstr(low, "memory") != NULL;
}

static void check_inputs(const run_state *S, const buffers *B, const char *when)
{
    NT_REQUIRE(memcmp(B->images, B->images0, sizeof B->images) == 0,
               "k=%lld %s: the caller's images changed", (long long)S->k, when);
    NT_REQUIRE(memcmp(B->labels, B->labels0, sizeof B->labels) == 0,
               "k=%lld %s: the caller's labels changed", (long long)S->k, when);
    NT_REQUIRE(memcmp(B->rx, B->rx0, sizeof B->rx) == 0 && memcmp(B->ry, B->ry0, sizeof B->ry) == 0,
               "k=%lld %s: the caller's regressor data changed", (long long)S->k, when);
    if (B->saved)
        NT_REQUIRE(memcmp(B->save, B->model0, (size_t)B->saved) == 0,
                   "k=%lld %s: the model buffer changed", (long long)S->k, when);
    {
        int i;
        for (i = 0; i < GUARD; i++)
            NT_REQUIRE(B->save[SAVE_CAP + i] == 0xEE,
                       "k=%lld %s: a byte past the save capacity was written", (long long)S->k,
                       when);
    }
}

/* The contract of a call that saw the refused allocation. */
static void on_failure(run_state *S, const buffers *B, const char *call, tsq_status st,
                       const char *msg)
{
    S->hit = 1;
    S->hit_phase = S->phase;
    snprintf(S->hit_call, sizeof S->hit_call, "%s", call);
    S->st.fail_at = 0; /* from now on every allocation succeeds */
    NT_REQUIRE(st == TSQ_ERR_NO_MEMORY, "k=%lld: %s saw the refused allocation and returned %s (%s)",
               (long long)S->k, call, tsq_status_string(st), msg);
    NT_REQUIRE(msg && msg[0], "k=%lld: %s (%s): empty message", (long long)S->k, call,
               tsq_status_string(st));
    NT_REQUIRE(mentions_memory(msg), "k=%lld: %s: message \"%s\" does not mention memory",
               (long long)S->k, call, msg);
    check_inputs(S, B, call);
}

/* One library call. If the refused allocation happened during it, check the
 * failure contract, then retry it (MODE_RETRY) or stop the run (MODE_ABORT). */
#define CALL(name, expr, msg)                                                          \
    do {                                                                               \
        int64_t f0_ = S->st.failures;                                                  \
        tsq_status s_ = (expr);                                                        \
        if (S->st.failures == f0_) {                                                   \
            NT_REQUIRE(s_ == TSQ_OK, "k=%lld: %s: %s (%s)", (long long)S->k, name,     \
                       tsq_status_string(s_), (msg));                                  \
            break;                                                                     \
        }                                                                              \
        on_failure(S, B, name, s_, (msg));                                             \
        if (S->mode == MODE_ABORT)                                                     \
            return;                                                                    \
        s_ = (expr);                                                                   \
        NT_REQUIRE(s_ == TSQ_OK, "k=%lld: retry of %s: %s (%s)", (long long)S->k, name, \
                   tsq_status_string(s_), (msg));                                      \
    } while (0)

#define CTXMSG tsq_context_errmsg(S->ctx)
#define NETMSG tsq_net_errmsg(S->net)

/* Creates a layer and appends it to S->net; the test owns it in between. */
#define ADD_LAYER(name, create_expr)                                                   \
    do {                                                                               \
        CALL(name, create_expr, CTXMSG);                                               \
        CALL("net_append", tsq_net_append(S->net, S->layer), NETMSG);                  \
        S->layer = NULL;                                                               \
    } while (0)

static void make_buffers(buffers *B)
{
    th_rng r = {77};
    int64_t i, p, a, b, c;
    int8_t wt[RD * RC];
    for (i = 0; i < NIMG; i++) {
        int32_t cls = (int32_t)(th_rng_next(&r) % NCLS);
        float *img = B->images + i * IMG;
        for (p = 0; p < IMG; p++)
            img[p] = (float)(0.1 * th_rng_normal(&r));
        for (a = 0; a < 3; a++)
            for (b = 0; b < 3; b++)
                img[(a + (cls == 1 ? 3 : 0)) * 6 + b + (cls == 2 ? 3 : 0)] += 1.5f;
        B->labels[i] = cls;
    }
    /* Regressor data with a planted ternary solution. */
    for (i = 0; i < RD * RC; i++)
        wt[i] = (int8_t)((int64_t)(th_rng_next(&r) % 3) - 1);
    for (i = 0; i < RROWS * RD; i++)
        B->rx[i] = (uint8_t)(th_rng_next(&r) % 4);
    for (i = 0; i < RROWS; i++)
        for (c = 0; c < RC; c++) {
            int32_t acc = 0, code;
            for (p = 0; p < RD; p++)
                acc += B->rx[i * RD + p] * wt[p * RC + c];
            code = acc <= 0 ? 0 : (acc > 3 ? 3 : acc);
            B->ry[i * RC + c] = (uint8_t)code;
        }
    memset(B->save, 0xEE, sizeof B->save);
    memcpy(B->images0, B->images, sizeof B->images);
    memcpy(B->labels0, B->labels, sizeof B->labels);
    memcpy(B->rx0, B->rx, sizeof B->rx);
    memcpy(B->ry0, B->ry, sizeof B->ry);
    B->saved = 0;
}

/* Copies every trainable parameter of the net into buf (NULL: only counts). */
static int64_t param_snapshot(tsq_net *net, float *buf)
{
    int32_t np = 0, i;
    int64_t total = 0;
    NT_REQUIRE(tsq_net_param_count(net, &np) == TSQ_OK, "param_count");
    for (i = 0; i < np; i++) {
        tsq_tensor *v = NULL;
        int64_t n;
        NT_REQUIRE(tsq_net_param(net, i, &v, NULL, NULL, NULL) == TSQ_OK, "net_param");
        n = nt_numel(v);
        if (buf)
            memcpy(buf + total, nt_data(v), (size_t)n * sizeof(float));
        total += n;
    }
    return total;
}

/* Training steps. A step that runs out of memory must not have updated any
 * parameter (the update is its last act); batch-norm running statistics of
 * the layers before the failing one may have moved (documented). */
static void train(run_state *S, const buffers *B, int steps)
{
    int s;
    for (s = 0; s < steps; s++) {
        int b = s % NB;
        int64_t f0 = S->st.failures, np = param_snapshot(S->net, NULL);
        float *before = malloc((size_t)np * sizeof(float)), *after;
        tsq_status st;
        param_snapshot(S->net, before);
        st = tsq_net_train_step(S->net, S->xb[b], B->labels + b * BS, BS, NULL, NULL);
        if (S->st.failures == f0) {
            free(before);
            NT_REQUIRE(st == TSQ_OK, "k=%lld: net_train_step: %s (%s)", (long long)S->k,
                       tsq_status_string(st), NETMSG);
            continue;
        }
        after = malloc((size_t)np * sizeof(float));
        param_snapshot(S->net, after);
        NT_REQUIRE(memcmp(before, after, (size_t)np * sizeof(float)) == 0,
                   "k=%lld: a failed train step changed the parameters", (long long)S->k);
        free(before);
        free(after);
        on_failure(S, B, "net_train_step", st, NETMSG);
        if (S->mode == MODE_ABORT)
            return;
        st = tsq_net_train_step(S->net, S->xb[b], B->labels + b * BS, BS, NULL, NULL);
        NT_REQUIRE(st == TSQ_OK, "k=%lld: retry of net_train_step: %s (%s)", (long long)S->k,
                   tsq_status_string(st), NETMSG);
    }
}

/* A session call (learn_codes / fit_transform) over the batches until done.
 * After a refused allocation: if the session still runs, the same batch is
 * fed again (the failed call did not count it); if the failure ended the
 * session, the session is restarted from the first batch. */
static void session_loop(run_state *S, const buffers *B, int fit)
{
    int32_t done = 0, stage = 0;
    int b, passes = 0;
    const char *name = fit ? "net_fit_transform" : "net_learn_codes";
    while (!done) {
        NT_REQUIRE(passes++ < 60, "k=%lld: %s does not finish", (long long)S->k, name);
        for (b = 0; b < NB; b++) {
            int64_t f0 = S->st.failures;
            tsq_status st = fit ? tsq_net_fit_transform(S->net, S->xb[b], b == NB - 1, &done)
                                : tsq_net_learn_codes(S->net, S->xb[b], b == NB - 1, &done);
            if (S->st.failures == f0) {
                NT_REQUIRE(st == TSQ_OK, "k=%lld: %s: %s (%s)", (long long)S->k, name,
                           tsq_status_string(st), NETMSG);
                continue;
            }
            on_failure(S, B, name, st, NETMSG);
            if (S->mode == MODE_ABORT)
                return;
            NT_REQUIRE(tsq_net_tsq_progress(S->net, &stage, NULL, NULL, NULL) == TSQ_OK,
                       "progress");
            if (stage == TSQ_NET_TSQ_IDLE) {
                b = -1; /* the session ended: start it again */
                continue;
            }
            st = fit ? tsq_net_fit_transform(S->net, S->xb[b], b == NB - 1, &done)
                     : tsq_net_learn_codes(S->net, S->xb[b], b == NB - 1, &done);
            NT_REQUIRE(st == TSQ_OK, "k=%lld: retry of %s: %s (%s)", (long long)S->k, name,
                       tsq_status_string(st), NETMSG);
        }
        if (!fit)
            NT_REQUIRE(done, "k=%lld: learn_codes not done after the last batch",
                       (long long)S->k);
    }
}

static void build(run_state *S, const buffers *B)
{
    const int64_t in[3] = {1, 6, 6}, bshape[4] = {BS, 1, 6, 6}, yshape[2] = {BS, NCLS};
    tsq_context *ctx = S->ctx;
    int b;
    S->phase = PH_BUILD;
    for (b = 0; b < NB; b++)
        CALL("tensor_wrap",
             tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, bshape, (void *)(B->images + b * BS * IMG),
                             BS * IMG * sizeof(float), &S->xb[b]),
             CTXMSG);
    CALL("tensor_create", tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, yshape, &S->y), CTXMSG);
    CALL("net_create", tsq_net_create(ctx, 3, in, &S->net), CTXMSG);
    ADD_LAYER("layer_conv2d_create", tsq_layer_conv2d_create(ctx, 1, 4, 3, 3, 1, 1, &S->layer));
    ADD_LAYER("layer_batchnorm_create", tsq_layer_batchnorm_create(ctx, 4, &S->layer));
    ADD_LAYER("layer_relu_create", tsq_layer_relu_create(ctx, &S->layer));
    ADD_LAYER("layer_conv2d_create", tsq_layer_conv2d_create(ctx, 4, 4, 3, 3, 1, 1, &S->layer));
    ADD_LAYER("layer_batchnorm_create", tsq_layer_batchnorm_create(ctx, 4, &S->layer));
    ADD_LAYER("layer_relu_create", tsq_layer_relu_create(ctx, &S->layer));
    ADD_LAYER("layer_flatten_create", tsq_layer_flatten_create(ctx, &S->layer));
    ADD_LAYER("layer_dense_create", tsq_layer_dense_create(ctx, 144, NCLS, &S->layer));
    CALL("net_set_optimizer_sgd", tsq_net_set_optimizer_sgd(S->net, 0.05, 0.9, 0, 1e-4), NETMSG);
    train(S, B, 2);
}

static void step1(run_state *S, const buffers *B)
{
    S->phase = PH_STEP1;
    session_loop(S, B, 0);
    if (S->mode == MODE_ABORT && S->hit)
        return;
    CALL("net_set_optimizer_sgd", tsq_net_set_optimizer_sgd(S->net, 0.02, 0.9, 0, 0), NETMSG);
    train(S, B, 1);
}

static void step2(run_state *S, const buffers *B)
{
    int64_t correct = 0;
    S->phase = PH_STEP2;
    CALL("net_tsq_regressor", tsq_net_tsq_regressor(S->net, &S->reg), NETMSG);
    CALL("regressor_set_option", tsq_regressor_set_option(S->reg, TSQ_REGRESSOR_ROUNDS, 2),
         tsq_regressor_errmsg(S->reg));
    session_loop(S, B, 1);
    if (S->mode == MODE_ABORT && S->hit)
        return;
    CALL("net_set_optimizer_sgd", tsq_net_set_optimizer_sgd(S->net, 0.002, 0.9, 0, 0), NETMSG);
    train(S, B, 1);
    CALL("net_evaluate",
         tsq_net_evaluate(S->net, S->xb[0], B->labels, BS, NULL, &correct, S->res.pred), NETMSG);
}

static void deploy(run_state *S, buffers *B)
{
    uint64_t size = 0, ws = 0;
    tsq_context *ctx = S->ctx;
    void *wsbuf;
    int64_t before;
    S->phase = PH_DEPLOY;
    CALL("net_save", tsq_net_save(S->net, NULL, 0, &size), NETMSG);
    NT_REQUIRE(size > 0 && size <= SAVE_CAP, "model of %llu bytes", (unsigned long long)size);
    CALL("net_save", tsq_net_save(S->net, B->save, size, &size), NETMSG);
    B->saved = size;
    memcpy(B->model0, B->save, (size_t)size);
    CALL("net_load", tsq_net_load(ctx, B->save, size, &S->loaded), CTXMSG);
    CALL("plan_create", tsq_plan_create(ctx, S->loaded, &S->plan), CTXMSG);
    CALL("plan_run", tsq_plan_run(ctx, S->plan, S->xb[0], S->y, NULL, 0), CTXMSG);
    memcpy(S->res.plan_y, nt_data(S->y), sizeof S->res.plan_y);
    /* With a caller workspace the run allocates nothing at all. */
    CALL("plan_workspace_size", tsq_plan_workspace_size(ctx, S->plan, BS, &ws), CTXMSG);
    wsbuf = malloc((size_t)ws + 1);
    before = S->st.total_allocs;
    NT_REQUIRE(tsq_plan_run(ctx, S->plan, S->xb[1], S->y, wsbuf, ws) == TSQ_OK, "plan_run: %s",
               CTXMSG);
    free(wsbuf);
    NT_REQUIRE(S->st.total_allocs == before, "plan_run with a workspace allocated %lld blocks",
               (long long)(S->st.total_allocs - before));
    memcpy(S->res.plan_y2, nt_data(S->y), sizeof S->res.plan_y2);
    CALL("net_evaluate", tsq_net_evaluate(S->loaded, S->xb[0], NULL, 0, NULL, NULL, S->res.pred),
         tsq_net_errmsg(S->loaded));
}

static void standalone(run_state *S, buffers *B)
{
    tsq_context *ctx = S->ctx;
    const int64_t cshape[4] = {BS, 1, 6, 6}, xs[2] = {RROWS, RD}, ys[2] = {RROWS, RC},
                  ws[2] = {RD, RC}, vs[1] = {RC};
    double err = 0, sp = 0, obj = 0;
    uint64_t qsize = 0;
    static uint8_t qbuf[4096];
    int32_t done = 0, passes = 0;
    const float eps1[1] = {0.5f}, delta1[1] = {1.0f};
    const float ones[RC] = {1, 1, 1, 1};
    int32_t acc[RROWS * RC];
    S->phase = PH_ALONE;
    /* Quantizer: streamed statistics, fit, encode, decode. */
    CALL("quantizer_create", tsq_quantizer_create(ctx, 2, 0, &S->q), CTXMSG);
    CALL("quantizer_observe", tsq_quantizer_observe(S->q, S->xb[0]), tsq_quantizer_errmsg(S->q));
    CALL("quantizer_fit", tsq_quantizer_fit(S->q), tsq_quantizer_errmsg(S->q));
    CALL("tensor_create", tsq_tensor_create(ctx, TSQ_DTYPE_U8, 4, cshape, &S->t[0]), CTXMSG);
    CALL("quantizer_encode", tsq_quantizer_encode(S->q, S->xb[0], S->t[0]),
         tsq_quantizer_errmsg(S->q));
    CALL("tensor_create", tsq_tensor_create(ctx, TSQ_DTYPE_F32, 4, cshape, &S->t[1]), CTXMSG);
    CALL("quantizer_decode", tsq_quantizer_decode(S->q, S->t[0], S->t[1]),
         tsq_quantizer_errmsg(S->q));
    /* tsq_learn_codes on a batch (temporary histogram) and on the statistics. */
    CALL("learn_codes", tsq_learn_codes(S->q, S->xb[1], S->t[0], &err, &sp),
         tsq_quantizer_errmsg(S->q));
    memcpy(S->res.codes, nt_data(S->t[0]), sizeof S->res.codes);
    CALL("learn_codes", tsq_learn_codes(S->q, NULL, NULL, &err, &sp), tsq_quantizer_errmsg(S->q));
    /* Per channel, and a save / load round trip. */
    CALL("quantizer_create", tsq_quantizer_create(ctx, 3, 1, &S->qc), CTXMSG);
    CALL("learn_codes", tsq_learn_codes(S->qc, S->xb[0], NULL, &err, &sp),
         tsq_quantizer_errmsg(S->qc));
    CALL("quantizer_save", tsq_quantizer_save(S->qc, NULL, 0, &qsize), tsq_quantizer_errmsg(S->qc));
    NT_REQUIRE(qsize <= sizeof qbuf, "quantizer of %llu bytes", (unsigned long long)qsize);
    CALL("quantizer_save", tsq_quantizer_save(S->qc, qbuf, qsize, &qsize),
         tsq_quantizer_errmsg(S->qc));
    {
        int64_t f0 = S->st.failures;
        tsq_status st = tsq_quantizer_load(ctx, qbuf, qsize, &S->ql);
        if (S->st.failures != f0) {
            on_failure(S, B, "quantizer_load", st, CTXMSG);
            if (S->mode == MODE_ABORT)
                return;
            st = tsq_quantizer_load(ctx, qbuf, qsize, &S->ql);
        }
        NT_REQUIRE(st == TSQ_OK, "quantizer_load: %s", CTXMSG);
    }
    /* Convolution rows from codes. */
    CALL("im2col_rows", tsq_regressor_im2col_rows(ctx, S->t[0], 3, 3, 1, 1, 1, 1, NULL, 0, &S->t[2]),
         CTXMSG);
    CALL("im2col_output_rows", tsq_regressor_im2col_output_rows(ctx, S->t[0], NULL, 0, &S->t[3]), CTXMSG);
    /* Regressor on the caller's planted data, in one call and streamed. */
    CALL("tensor_wrap", tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, xs, B->rx, sizeof B->rx, &S->t[4]),
         CTXMSG);
    CALL("tensor_wrap", tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, ys, B->ry, sizeof B->ry, &S->t[5]),
         CTXMSG);
    CALL("tensor_create", tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, ws, &S->t[6]), CTXMSG);
    CALL("tensor_create", tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vs, &S->t[7]), CTXMSG);
    CALL("tensor_create", tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vs, &S->t[8]), CTXMSG);
    CALL("regressor_create", tsq_regressor_create(ctx, &S->sreg), CTXMSG);
    CALL("regressor_set_levels", tsq_regressor_set_levels(S->sreg, 2, 0.5f, 1.0f),
         tsq_regressor_errmsg(S->sreg));
    CALL("regressor_set_quantizer", tsq_regressor_set_quantizer(S->sreg, S->q),
         tsq_regressor_errmsg(S->sreg));
    CALL("regressor_set_levels", tsq_regressor_set_levels(S->sreg, 2, 0.5f, 1.0f),
         tsq_regressor_errmsg(S->sreg));
    CALL("regressor_set_option", tsq_regressor_set_option(S->sreg, TSQ_REGRESSOR_ROUNDS, 3),
         tsq_regressor_errmsg(S->sreg));
    CALL("fit_transform",
         tsq_fit_transform(S->sreg, S->t[4], S->t[5], NULL, NULL, S->t[6], S->t[7], S->t[8], &obj),
         tsq_regressor_errmsg(S->sreg));
    memcpy(S->res.rw, nt_data(S->t[6]), sizeof S->res.rw);
    memcpy(S->res.ralpha, nt_data(S->t[7]), sizeof S->res.ralpha);
    memcpy(S->res.rb, nt_data(S->t[8]), sizeof S->res.rb);
    /* The streamed protocol: a failed pass call is retried; if the failure
     * abandoned the fit, it begins again. */
    CALL("regressor_begin", tsq_regressor_begin(S->sreg, RD, RC, NULL, 0),
         tsq_regressor_errmsg(S->sreg));
    while (!done) {
        int64_t f0 = S->st.failures;
        tsq_status st = tsq_regressor_feed(S->sreg, S->t[4], S->t[5], NULL);
        const char *call = "regressor_feed";
        NT_REQUIRE(passes++ < 60, "streamed fit does not finish");
        if (st == TSQ_OK) {
            call = "regressor_end_pass";
            st = tsq_regressor_end_pass(S->sreg, &done);
        }
        if (S->st.failures == f0) {
            NT_REQUIRE(st == TSQ_OK, "k=%lld: %s: %s (%s)", (long long)S->k, call,
                       tsq_status_string(st), tsq_regressor_errmsg(S->sreg));
            continue;
        }
        on_failure(S, B, call, st, tsq_regressor_errmsg(S->sreg));
        if (S->mode == MODE_ABORT)
            return;
        /* Start the fit again: whatever pass it was in is dropped. */
        CALL("regressor_begin", tsq_regressor_begin(S->sreg, RD, RC, NULL, 0),
             tsq_regressor_errmsg(S->sreg));
        done = 0;
    }
    CALL("regressor_result", tsq_regressor_result(S->sreg, S->t[6], S->t[7], S->t[8], NULL),
         tsq_regressor_errmsg(S->sreg));
    memcpy(S->res.sw, nt_data(S->t[6]), sizeof S->res.sw);
    /* Packed weights, thresholds and the low-bit GEMM (allocated workspace). */
    CALL("packed_weights_create", tsq_packed_weights_create(ctx, S->t[6], 2, &S->pw), CTXMSG);
    CALL("thresholds_create",
         tsq_thresholds_create(ctx, RC, ones, NULL, 2, eps1, delta1, 1, &S->th), CTXMSG);
    CALL("lowbit_gemm",
         tsq_lowbit_gemm(ctx, S->pw, S->t[4], 2, TSQ_KERNEL_AUTO, acc, RROWS * RC, NULL, 0),
         CTXMSG);
    CALL("tensor_create", tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, ys, &S->t[9]), CTXMSG);
    CALL("lowbit_gemm_threshold",
         tsq_lowbit_gemm_threshold(ctx, S->pw, S->t[4], 2, S->th, TSQ_KERNEL_AUTO, S->t[9], NULL,
                                   0),
         CTXMSG);
    /* Clone and fold on the converted net. */
    CALL("net_clone", tsq_net_clone(S->net, &S->clone), NETMSG);
    CALL("net_fold_batchnorm", tsq_net_fold_batchnorm(S->clone, NULL), tsq_net_errmsg(S->clone));
    CALL("net_forward", tsq_net_forward(S->clone, S->xb[1], S->y, 0), tsq_net_errmsg(S->clone));
}

/* The whole run; returns early (MODE_ABORT) right after the failure. */
static void run_pipeline(run_state *S, buffers *B)
{
    build(S, B);
    if (S->hit && S->mode == MODE_ABORT)
        return;
    step1(S, B);
    if (S->hit && S->mode == MODE_ABORT)
        return;
    step2(S, B);
    if (S->hit && S->mode == MODE_ABORT)
        return;
    deploy(S, B);
    if (S->hit && S->mode == MODE_ABORT)
        return;
    standalone(S, B);
}

static void destroy_all(run_state *S)
{
    int i;
    tsq_plan_destroy(S->plan);
    tsq_thresholds_destroy(S->th);
    tsq_packed_weights_destroy(S->pw);
    tsq_net_destroy(S->clone);
    tsq_net_destroy(S->loaded);
    tsq_net_destroy(S->net); /* also frees its regressor S->reg */
    tsq_layer_destroy(S->layer);
    tsq_regressor_destroy(S->sreg);
    tsq_quantizer_destroy(S->q);
    tsq_quantizer_destroy(S->qc);
    tsq_quantizer_destroy(S->ql);
    for (i = 0; i < NB; i++)
        tsq_tensor_destroy(S->xb[i]);
    tsq_tensor_destroy(S->y);
    for (i = 0; i < 12; i++)
        tsq_tensor_destroy(S->t[i]);
}

/* One run with allocation k (1-based, after the context's own) refused. */
static void one_run(run_state *S, buffers *B, int mode, int64_t k)
{
    memset(S, 0, sizeof *S);
    make_buffers(B);
    S->mode = mode;
    S->k = k;
    S->ctx = th_context(&S->st);
    TH_OK(S->ctx, tsq_context_set_seed(S->ctx, 5));
    if (k > 0)
        S->st.fail_at = S->st.total_allocs + k;
    run_pipeline(S, B);
    check_inputs(S, B, "end of run");
    destroy_all(S);
    th_context_done(S->ctx, &S->st);
}

static int64_t clean_count(results *ref)
{
    static run_state S;
    static buffers B;
    int64_t n;
    one_run(&S, &B, MODE_RETRY, 0);
    ck_assert_int_eq(S.hit, 0);
    ck_assert_int_eq(S.st.failures, 0);
    n = S.st.total_allocs - 1; /* minus the context itself */
    *ref = S.res;
    return n;
}

/* TSQ_E2E_FROM=k starts at allocation k (to debug one failure quickly). */
static int64_t first_k(void)
{
    const char *e = getenv("TSQ_E2E_FROM");
    return e && atoll(e) > 0 ? atoll(e) : 1;
}

START_TEST(test_retry_every_allocation)
{
    static run_state S;
    static buffers B;
    static results ref;
    int64_t n = clean_count(&ref), k, per_phase[PH_COUNT] = {0}, same[PH_COUNT] = {0};
    int p;
    ck_assert_int_gt(n, 100);
    for (k = first_k(); k <= n; k++) {
        one_run(&S, &B, MODE_RETRY, k);
        NT_REQUIRE(S.hit, "k=%lld of %lld: no call saw the refused allocation", (long long)k,
                   (long long)n);
        per_phase[S.hit_phase]++;
        if (memcmp(&S.res, &ref, sizeof ref) == 0)
            same[S.hit_phase]++;
        else if (getenv("TSQ_TEST_VERBOSE"))
            fprintf(stderr, "  k=%lld: %s (%s): results differ after the retry\n", (long long)k,
                    S.hit_call, phase_name[S.hit_phase]);
        /* Every result is a deterministic function of the data and the
         * seed, and a failed call changes no state that matters (learn_codes
         * counts no batch, fit_transform's rewrites are all-or-nothing, a
         * failed constructor keeps its random stream for the retry), so a
         * retried failure must not change any result. The one exception: a
         * training step that fails inside its train-mode forward has
         * already moved the running statistics of the batch-norms before
         * the failing layer (documented in nn.h). */
        if (strcmp(S.hit_call, "net_train_step") != 0)
            NT_REQUIRE(memcmp(&S.res, &ref, sizeof ref) == 0,
                       "k=%lld: after a failed and retried %s the results differ", (long long)k,
                       S.hit_call);
    }
    if (getenv("TSQ_TEST_VERBOSE")) {
        fprintf(stderr, "alloc_e2e retry: N = %lld allocations, every one refused once\n",
                (long long)n);
        for (p = 0; p < PH_COUNT; p++)
            fprintf(stderr, "  %-10s k = %4lld, results bit-identical after retry: %lld\n",
                    phase_name[p], (long long)per_phase[p], (long long)same[p]);
    }
}
END_TEST

START_TEST(test_abort_every_allocation)
{
    static run_state S;
    static buffers B;
    static results ref;
    int64_t n = clean_count(&ref), k;
    for (k = first_k(); k <= n; k++) {
        one_run(&S, &B, MODE_ABORT, k);
        NT_REQUIRE(S.hit, "k=%lld of %lld: no call saw the refused allocation", (long long)k,
                   (long long)n);
    }
    if (getenv("TSQ_TEST_VERBOSE"))
        fprintf(stderr, "alloc_e2e abort: N = %lld\n", (long long)n);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("alloc_e2e");
    TCase *tc = tcase_create("retry");
    tcase_set_timeout(tc, 1200); /* valgrind */
    tcase_add_test(tc, test_retry_every_allocation);
    suite_add_tcase(s, tc);
    tc = tcase_create("abort");
    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, test_abort_every_allocation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run(suite());
}
