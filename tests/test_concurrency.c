/* Concurrency: the thread model of include/tsq/core.h and
 * include/tsq/plan.h, checked bit for bit (and by ThreadSanitizer under
 * `make check-tsan`):
 *  1. T threads, each with its own context and handles, run a whole job
 *     (quantizer fit + encode, regressor fit, a tiny CNN trained, step 1
 *     by tsq_net_learn_codes, step 2 by tsq_net_fit_transform, a plan
 *     made from it and run) and get exactly the digests the same jobs gave
 *     when run one after the other beforehand;
 *  2. one immutable tsq_plan from a converted net, run at once by T
 *     threads, each with its own context, input and batch size, half with
 *     a caller workspace (misaligned on purpose) and half with a workspace
 *     the library allocates: every output equals the single-threaded run;
 *  3. one context shared as core.h allows: it is a handle, so every
 *     object is created from it by one thread at a time, then each thread
 *     uses only its own handles (its allocator is thread-safe, as required
 *     when objects made from one context are used from several threads),
 *     including tsq_net_learn_codes / tsq_net_fit_transform, which create
 *     objects from the net's context inside; then each thread runs its own
 *     plan on the shared context with a workspace the library allocates
 *     (plan.h allows that with a thread-safe allocator). The digests equal
 *     those of the same jobs on one context run one after the other.
 * Worker threads never call Check (its assertions are not thread-safe):
 * they record a status and message, and the main thread asserts. */
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sizes ---- */
#define QN 96   /* quantizer: samples x channels */
#define QC 8
#define RN 128  /* regressor: rows, inputs, outputs */
#define RD 20
#define RC 6
#define IMG 6   /* the CNN's 1 x IMG x IMG images, NB per batch, NBATCH batches */
#define NB 24
#define NBATCH 2
#define NCLASS 3
#define MAX_T 8

static int thread_count(void)
{
    return th_quick() ? 6 : MAX_T;
}

/* ---- a 64-bit FNV-1a digest (the generator is tests/support/rng.h) ---- */
static void digest(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++)
        *h = (*h ^ b[i]) * 0x100000001B3ull;
}

/* ---- a thread-safe counting allocator, for the shared context ---- */
typedef struct {
    pthread_mutex_t lock;
    th_alloc_stats stats;
} locked_alloc;

static void *locked_alloc_fn(void *user, uint64_t size, uint64_t alignment)
{
    locked_alloc *a = user;
    void *p;
    pthread_mutex_lock(&a->lock);
    p = th_alloc(&a->stats, size, alignment);
    pthread_mutex_unlock(&a->lock);
    return p;
}

static void locked_free_fn(void *user, void *ptr)
{
    locked_alloc *a = user;
    pthread_mutex_lock(&a->lock);
    th_free(&a->stats, ptr);
    pthread_mutex_unlock(&a->lock);
}

/* ---- the job: every piece of work a thread does, in three phases ---- */
enum { S_QUANT, S_REG, S_TRAIN, S_LEARN, S_CONVERT, S_PLAN, NSTAGE };
static const char *const stage_name[NSTAGE] = {"quantizer fit+encode", "regressor fit",
                                               "net training", "net learn_codes + step 1",
                                               "net fit_transform", "plan run"};

typedef struct {
    uint64_t seed;
    tsq_context *ctx;   /* borrowed */
    /* inputs, owned by the job */
    float qx[QN * QC], rx[RN * RD], nx[NBATCH][NB * IMG * IMG];
    uint8_t ry[RN * RC], qcodes[QN * QC];
    int32_t labels[NBATCH][NB];
    float out[NB * NCLASS];
    /* handles */
    tsq_tensor *tqx, *tqcodes, *trx, *try_, *tw, *talpha, *tb, *tnx[NBATCH], *tout, *tplan_out;
    tsq_quantizer *q;
    tsq_regressor *reg;
    tsq_net *net;
    tsq_plan *plan;
    /* results */
    uint64_t dig[NSTAGE];
    tsq_status st;
    char msg[320];
} job;

/* On failure: record where and why, then leave the phase. */
#define TRY(j, expr, errmsg)                                                              \
    do {                                                                                  \
        tsq_status st_ = (expr);                                                          \
        if (st_ != TSQ_OK) {                                                              \
            (j)->st = st_;                                                                \
            snprintf((j)->msg, sizeof (j)->msg, "%s:%d: %s -> %s (%s)", __FILE__,         \
                     __LINE__, #expr, tsq_status_string(st_), (errmsg));                  \
            return;                                                                       \
        }                                                                                 \
    } while (0)

static void fill_inputs(job *j)
{
    th_rng s = {j->seed * 7919u + 17u};
    int64_t i, b;
    for (i = 0; i < QN * QC; i++)
        j->qx[i] = (float)(th_rng_normal(&s) * (1.0 + 0.2 * (double)(i % QC)));
    for (i = 0; i < RN * RD; i++)
        j->rx[i] = (float)th_rng_normal(&s);
    for (i = 0; i < RN * RC; i++)
        j->ry[i] = (uint8_t)(th_rng_next(&s) % 4);
    /* images with a bright 2x2 square in the left, middle or right third */
    for (b = 0; b < NBATCH; b++)
        for (i = 0; i < NB; i++) {
            float *img = j->nx[b] + i * IMG * IMG;
            int32_t c = (int32_t)(th_rng_next(&s) % NCLASS);
            int64_t p, oy = (int64_t)(th_rng_next(&s) % (IMG - 1));
            for (p = 0; p < IMG * IMG; p++)
                img[p] = (float)(0.1 * th_rng_normal(&s));
            img[oy * IMG + 2 * c] += 1.5f;
            img[oy * IMG + 2 * c + 1] += 1.5f;
            img[(oy + 1) * IMG + 2 * c] += 1.5f;
            img[(oy + 1) * IMG + 2 * c + 1] += 1.5f;
            j->labels[b][i] = c;
        }
}

static void append(job *j, tsq_layer *l)
{
    if (j->st == TSQ_OK && tsq_net_append(j->net, l) != TSQ_OK) {
        j->st = TSQ_ERR_INTERNAL;
        snprintf(j->msg, sizeof j->msg, "append: %s", tsq_net_errmsg(j->net));
    }
}

/* conv-BN-relu, conv-BN-relu, pool, flatten, dense-BN-relu, dense: step 2
 * converts the second conv and the first dense. */
static void build_net(job *j)
{
    const int64_t in[3] = {1, IMG, IMG};
    tsq_context *ctx = j->ctx;
    tsq_layer *l = NULL;
    TRY(j, tsq_net_create(ctx, 3, in, &j->net), tsq_context_errmsg(ctx));
    TRY(j, tsq_layer_conv2d_create(ctx, 1, 4, 3, 3, 1, 1, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_batchnorm_create(ctx, 4, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_relu_create(ctx, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_conv2d_create(ctx, 4, 6, 3, 3, 1, 1, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_batchnorm_create(ctx, 6, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_relu_create(ctx, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_maxpool2d_create(ctx, 2, 2, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_flatten_create(ctx, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_dense_create(ctx, 6 * (IMG / 2) * (IMG / 2), 8, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_batchnorm_create(ctx, 8, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_relu_create(ctx, &l), tsq_context_errmsg(ctx));
    append(j, l);
    TRY(j, tsq_layer_dense_create(ctx, 8, NCLASS, &l), tsq_context_errmsg(ctx));
    append(j, l);
}

/* Phase 1 (uses the context): inputs, tensors and handles. */
static void job_setup(job *j, tsq_context *ctx, uint64_t seed)
{
    const int64_t qs[2] = {QN, QC}, rxs[2] = {RN, RD}, rys[2] = {RN, RC}, ws[2] = {RD, RC};
    const int64_t cs[1] = {RC}, ns[4] = {NB, 1, IMG, IMG}, os[2] = {NB, NCLASS};
    int b;
    memset(j, 0, sizeof *j);
    j->seed = seed;
    j->ctx = ctx;
    fill_inputs(j);
    TRY(j, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, qs, j->qx, sizeof j->qx, &j->tqx),
        tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, qs, j->qcodes, sizeof j->qcodes, &j->tqcodes),
        tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, rxs, j->rx, sizeof j->rx, &j->trx),
        tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 2, rys, j->ry, sizeof j->ry, &j->try_),
        tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, ws, &j->tw), tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, cs, &j->talpha), tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, cs, &j->tb), tsq_context_errmsg(ctx));
    for (b = 0; b < NBATCH; b++)
        TRY(j, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, ns, j->nx[b], sizeof j->nx[b], &j->tnx[b]),
            tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, os, j->out, sizeof j->out, &j->tout),
        tsq_context_errmsg(ctx));
    TRY(j, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, os, &j->tplan_out), tsq_context_errmsg(ctx));
    TRY(j, tsq_quantizer_create(ctx, 2, QC, &j->q), tsq_context_errmsg(ctx));
    TRY(j, tsq_regressor_create(ctx, &j->reg), tsq_context_errmsg(ctx));
    build_net(j);
}

static void digest_eval(job *j, int stage)
{
    if (j->st != TSQ_OK)
        return;
    TRY(j, tsq_net_forward(j->net, j->tnx[0], j->tout, 0), tsq_net_errmsg(j->net));
    digest(&j->dig[stage], j->out, sizeof j->out);
}

static void train_epoch(job *j, int stage)
{
    int b;
    for (b = 0; b < NBATCH && j->st == TSQ_OK; b++) {
        double loss = 0;
        int64_t correct = 0;
        TRY(j, tsq_net_train_step(j->net, j->tnx[b], j->labels[b], NB, &loss, &correct),
            tsq_net_errmsg(j->net));
        digest(&j->dig[stage], &loss, sizeof loss);
        digest(&j->dig[stage], &correct, sizeof correct);
    }
}

/* Phase 2 (uses only the job's own handles). */
static void job_work(job *j)
{
    tsq_regressor *nreg = NULL;
    double objective = 0, err = 0, sparsity = 0;
    float eps, delta;
    int32_t done = 0;
    int64_t c;
    int b, e, passes = 0;
    if (j->st != TSQ_OK)
        return;
    /* Quantizer: streaming fit, encode, then the one-call step 1. */
    TRY(j, tsq_quantizer_observe(j->q, j->tqx), tsq_quantizer_errmsg(j->q));
    TRY(j, tsq_quantizer_fit(j->q), tsq_quantizer_errmsg(j->q));
    TRY(j, tsq_quantizer_encode(j->q, j->tqx, j->tqcodes), tsq_quantizer_errmsg(j->q));
    digest(&j->dig[S_QUANT], j->qcodes, sizeof j->qcodes);
    for (c = 0; c < QC; c++) {
        TRY(j, tsq_quantizer_get_channel(j->q, c, &eps, &delta), tsq_quantizer_errmsg(j->q));
        digest(&j->dig[S_QUANT], &eps, sizeof eps);
        digest(&j->dig[S_QUANT], &delta, sizeof delta);
    }
    TRY(j, tsq_learn_codes(j->q, j->tqx, j->tqcodes, &err, &sparsity),
        tsq_quantizer_errmsg(j->q));
    digest(&j->dig[S_QUANT], j->qcodes, sizeof j->qcodes);
    digest(&j->dig[S_QUANT], &err, sizeof err);

    /* Regressor: TSQ step 2 on in-memory data. */
    TRY(j, tsq_regressor_set_levels(j->reg, 2, 0.25f, 0.5f), tsq_regressor_errmsg(j->reg));
    TRY(j, tsq_regressor_set_option(j->reg, TSQ_REGRESSOR_ROUNDS, 3),
        tsq_regressor_errmsg(j->reg));
    TRY(j, tsq_fit_transform(j->reg, j->trx, j->try_, NULL, NULL, j->tw, j->talpha, j->tb,
                             &objective),
        tsq_regressor_errmsg(j->reg));
    {
        void *p = NULL;
        TRY(j, tsq_tensor_data(j->tw, &p), "");
        digest(&j->dig[S_REG], p, RD * RC);
        TRY(j, tsq_tensor_data(j->talpha, &p), "");
        digest(&j->dig[S_REG], p, RC * sizeof(float));
        TRY(j, tsq_tensor_data(j->tb, &p), "");
        digest(&j->dig[S_REG], p, RC * sizeof(float));
        digest(&j->dig[S_REG], &objective, sizeof objective);
    }

    /* The CNN: train, step 1, train with quantizers, step 2. */
    TRY(j, tsq_net_set_optimizer_sgd(j->net, 0.05, 0.9, 0, 1e-4), tsq_net_errmsg(j->net));
    for (e = 0; e < 2; e++)
        train_epoch(j, S_TRAIN);
    digest_eval(j, S_TRAIN);
    if (j->st != TSQ_OK)
        return;
    for (b = 0; b < NBATCH && j->st == TSQ_OK; b++)
        TRY(j, tsq_net_learn_codes(j->net, j->tnx[b], b == NBATCH - 1, &done),
            tsq_net_errmsg(j->net));
    train_epoch(j, S_LEARN);
    digest_eval(j, S_LEARN);
    if (j->st != TSQ_OK)
        return;
    TRY(j, tsq_net_tsq_regressor(j->net, &nreg), tsq_net_errmsg(j->net));
    TRY(j, tsq_regressor_set_option(nreg, TSQ_REGRESSOR_ROUNDS, 2), tsq_regressor_errmsg(nreg));
    done = 0;
    while (!done && j->st == TSQ_OK) {
        for (b = 0; b < NBATCH; b++)
            TRY(j, tsq_net_fit_transform(j->net, j->tnx[b], b == NBATCH - 1, &done),
                tsq_net_errmsg(j->net));
        if (++passes > 100) {
            j->st = TSQ_ERR_INTERNAL;
            snprintf(j->msg, sizeof j->msg, "fit_transform: not done after 100 passes");
            return;
        }
    }
    digest_eval(j, S_CONVERT);
}

/* Phase 3 (uses the context): the plan of the converted net. */
static void job_plan_create(job *j)
{
    if (j->st != TSQ_OK)
        return;
    TRY(j, tsq_plan_create(j->ctx, j->net, &j->plan), tsq_context_errmsg(j->ctx));
}

/* Phase 4 (the plan is only read): one run on run_ctx, with a caller
 * workspace or one the library allocates through run_ctx. */
static void job_plan_run(job *j, tsq_context *run_ctx, int caller_workspace)
{
    uint64_t bytes = 0;
    void *ws = NULL, *y = NULL;
    tsq_status st;
    if (j->st != TSQ_OK)
        return;
    if (caller_workspace) {
        TRY(j, tsq_plan_workspace_size(run_ctx, j->plan, NB, &bytes),
            tsq_context_errmsg(run_ctx));
        ws = malloc(bytes ? bytes : 1);
        if (!ws) {
            j->st = TSQ_ERR_NO_MEMORY;
            return;
        }
    }
    st = tsq_plan_run(run_ctx, j->plan, j->tnx[1], j->tplan_out, ws, bytes);
    free(ws);
    TRY(j, st, tsq_context_errmsg(run_ctx));
    TRY(j, tsq_tensor_data(j->tplan_out, &y), "");
    digest(&j->dig[S_PLAN], y, sizeof j->out);
}

static void job_teardown(job *j)
{
    int b;
    tsq_plan_destroy(j->plan);
    tsq_net_destroy(j->net);
    tsq_regressor_destroy(j->reg);
    tsq_quantizer_destroy(j->q);
    tsq_tensor_destroy(j->tqx);
    tsq_tensor_destroy(j->tqcodes);
    tsq_tensor_destroy(j->trx);
    tsq_tensor_destroy(j->try_);
    tsq_tensor_destroy(j->tw);
    tsq_tensor_destroy(j->talpha);
    tsq_tensor_destroy(j->tb);
    for (b = 0; b < NBATCH; b++)
        tsq_tensor_destroy(j->tnx[b]);
    tsq_tensor_destroy(j->tout);
    tsq_tensor_destroy(j->tplan_out);
    j->plan = NULL;
    j->net = NULL;
    j->reg = NULL;
    j->q = NULL;
}

/* ---- 1. own contexts ---- */

typedef struct {
    uint64_t seed;
    int32_t ctx_threads;
    uint64_t dig[NSTAGE];
    tsq_status st;
    char msg[320];
} own_result;

/* A whole job in a context of its own (counting allocator: no leak). */
static void *own_job(void *arg)
{
    own_result *r = arg;
    th_alloc_stats stats;
    tsq_context *ctx = NULL;
    job *j = malloc(sizeof *j);
    memset(&stats, 0, sizeof stats);
    r->st = TSQ_ERR_NO_MEMORY;
    if (!j || tsq_context_create_with_allocator(&ctx, th_alloc, th_free, &stats) != TSQ_OK) {
        free(j);
        return NULL;
    }
    tsq_context_set_seed(ctx, r->seed);
    tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, r->ctx_threads);
    job_setup(j, ctx, r->seed);
    job_work(j);
    job_plan_create(j);
    job_plan_run(j, ctx, r->seed % 2 == 0);
    job_teardown(j);
    tsq_context_destroy(ctx);
    memcpy(r->dig, j->dig, sizeof r->dig);
    r->st = j->st;
    memcpy(r->msg, j->msg, sizeof r->msg);
    if (r->st == TSQ_OK && stats.live_blocks != 0) {
        r->st = TSQ_ERR_INTERNAL;
        snprintf(r->msg, sizeof r->msg, "%lld allocation(s) leaked",
                 (long long)stats.live_blocks);
    }
    free(j);
    return NULL;
}

static void compare_digests(const uint64_t *got, const uint64_t *want, int t)
{
    int s;
    for (s = 0; s < NSTAGE; s++)
        ck_assert_msg(got[s] == want[s],
                      "thread %d: %s differs from the single-threaded run (%016llx vs %016llx)",
                      t, stage_name[s], (unsigned long long)got[s],
                      (unsigned long long)want[s]);
}

START_TEST(test_own_contexts_match_serial)
{
    const int T = thread_count();
    own_result ref[MAX_T], par[MAX_T];
    pthread_t tid[MAX_T];
    int t, s;
    for (t = 0; t < T; t++) {
        memset(&ref[t], 0, sizeof ref[t]);
        ref[t].seed = 100 + (uint64_t)t;
        ref[t].ctx_threads = 1 + t % 2; /* nested: libtsq's own workers too */
        par[t] = ref[t];
        own_job(&ref[t]);
        ck_assert_msg(ref[t].st == TSQ_OK, "serial job %d: %s", t, ref[t].msg);
        for (s = 0; s < NSTAGE; s++)
            ck_assert_msg(ref[t].dig[s] != 0, "job %d: stage %s produced nothing", t,
                          stage_name[s]);
    }
    /* Different seeds give different work (the comparison means something). */
    ck_assert(ref[0].dig[S_PLAN] != ref[1].dig[S_PLAN]);
    for (t = 0; t < T; t++)
        ck_assert_int_eq(pthread_create(&tid[t], NULL, own_job, &par[t]), 0);
    for (t = 0; t < T; t++)
        ck_assert_int_eq(pthread_join(tid[t], NULL), 0);
    for (t = 0; t < T; t++) {
        ck_assert_msg(par[t].st == TSQ_OK, "thread %d: %s", t, par[t].msg);
        compare_digests(par[t].dig, ref[t].dig, t);
    }
}
END_TEST

/* ---- 2. one plan shared by T threads ---- */

#define PLAN_REPS 3

typedef struct {
    const tsq_plan *plan;
    int64_t batch, in_size, out_size;
    const float *x;      /* batch x in_size */
    const float *want;   /* the single-threaded output */
    int32_t ctx_threads;
    int caller_workspace;
    tsq_status st;
    char msg[320];
} plan_worker;

#define PFAIL(w, st_, ...)                                                                \
    do {                                                                                  \
        (w)->st = (st_);                                                                  \
        snprintf((w)->msg, sizeof (w)->msg, __VA_ARGS__);                                 \
        goto out;                                                                         \
    } while (0)

static void *plan_work(void *arg)
{
    plan_worker *w = arg;
    th_alloc_stats stats;
    tsq_context *ctx = NULL;
    tsq_tensor *x = NULL, *y = NULL;
    int64_t xs[4] = {w->batch, 1, IMG, IMG}, ys[2] = {w->batch, w->out_size}, v = 0;
    uint64_t bytes = 0;
    char *ws = NULL;
    void *yd = NULL;
    tsq_status st;
    int rep;
    memset(&stats, 0, sizeof stats);
    w->st = TSQ_OK;
    /* Half of the threads count their allocations, half use the default allocator. */
    st = w->caller_workspace ? tsq_context_create(&ctx)
                             : tsq_context_create_with_allocator(&ctx, th_alloc, th_free, &stats);
    if (st != TSQ_OK)
        PFAIL(w, st, "context_create");
    if ((st = tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, w->ctx_threads)) != TSQ_OK ||
        (st = tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, xs, (void *)(uintptr_t)w->x,
                              (uint64_t)(w->batch * w->in_size) * sizeof(float), &x)) != TSQ_OK ||
        (st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, ys, &y)) != TSQ_OK ||
        (st = tsq_plan_workspace_size(ctx, w->plan, w->batch, &bytes)) != TSQ_OK)
        PFAIL(w, st, "setup: %s", tsq_context_errmsg(ctx));
    if ((st = tsq_plan_get(w->plan, TSQ_PLAN_OUTPUT_SIZE, &v)) != TSQ_OK || v != w->out_size)
        PFAIL(w, TSQ_ERR_INTERNAL, "plan_get: %lld", (long long)v);
    if (w->caller_workspace) {
        ws = malloc(bytes + 1);
        if (!ws)
            PFAIL(w, TSQ_ERR_NO_MEMORY, "malloc");
    }
    for (rep = 0; rep < PLAN_REPS; rep++) {
        st = w->caller_workspace ? tsq_plan_run(ctx, w->plan, x, y, ws + 1, bytes)
                                 : tsq_plan_run(ctx, w->plan, x, y, NULL, 0);
        if (st != TSQ_OK)
            PFAIL(w, st, "plan_run: %s", tsq_context_errmsg(ctx));
        tsq_tensor_data(y, &yd);
        if (memcmp(yd, w->want, (size_t)(w->batch * w->out_size) * sizeof(float)) != 0)
            PFAIL(w, TSQ_ERR_INTERNAL, "run %d differs from the single-threaded output", rep);
        memset(yd, 0, (size_t)(w->batch * w->out_size) * sizeof(float));
    }
out:
    free(ws);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_context_destroy(ctx);
    if (w->st == TSQ_OK && stats.live_blocks != 0) {
        w->st = TSQ_ERR_INTERNAL;
        snprintf(w->msg, sizeof w->msg, "%lld allocation(s) leaked", (long long)stats.live_blocks);
    }
    return NULL;
}

START_TEST(test_shared_plan)
{
    const int T = thread_count();
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    job *j = malloc(sizeof *j);
    tsq_plan *plan = NULL;
    plan_worker w[MAX_T];
    pthread_t tid[MAX_T];
    float *xs[MAX_T], *want[MAX_T];
    int64_t in_size = 0, out_size = 0, i;
    th_rng seed = {77};
    int t;
    ck_assert_ptr_nonnull(j);
    /* A converted net, by the same pipeline as the jobs. */
    TH_OK(ctx, tsq_context_set_seed(ctx, 11));
    job_setup(j, ctx, 11);
    job_work(j);
    ck_assert_msg(j->st == TSQ_OK, "%s", j->msg);
    TH_OK(ctx, tsq_plan_create(ctx, j->net, &plan));
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_INPUT_SIZE, &in_size));
    TH_OK(ctx, tsq_plan_get(plan, TSQ_PLAN_OUTPUT_SIZE, &out_size));
    ck_assert_int_eq(in_size, IMG * IMG);
    ck_assert_int_eq(out_size, NCLASS);
    job_teardown(j); /* the plan keeps its own copy of the net */
    /* Per thread: its own input and batch size, the expected output. */
    for (t = 0; t < T; t++) {
        int64_t batch = t % 2 ? 16 : 5 + t;
        int64_t xshape[4] = {batch, 1, IMG, IMG}, yshape[2] = {batch, NCLASS};
        tsq_tensor *x = NULL, *y = NULL;
        xs[t] = malloc((size_t)(batch * in_size) * sizeof(float));
        want[t] = malloc((size_t)(batch * out_size) * sizeof(float));
        ck_assert(xs[t] && want[t]);
        for (i = 0; i < batch * in_size; i++)
            xs[t][i] = (float)th_rng_normal(&seed);
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, xshape, xs[t],
                                   (uint64_t)(batch * in_size) * sizeof(float), &x));
        TH_OK(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 2, yshape, want[t],
                                   (uint64_t)(batch * out_size) * sizeof(float), &y));
        TH_OK(ctx, tsq_plan_run(ctx, plan, x, y, NULL, 0));
        tsq_tensor_destroy(x);
        tsq_tensor_destroy(y);
        w[t].plan = plan;
        w[t].batch = batch;
        w[t].in_size = in_size;
        w[t].out_size = out_size;
        w[t].x = xs[t];
        w[t].want = want[t];
        w[t].ctx_threads = t % 3 == 2 ? 2 : 1;
        w[t].caller_workspace = t % 2 == 0;
        w[t].st = TSQ_ERR_INTERNAL;
    }
    /* Different inputs give different outputs (the comparison means something). */
    ck_assert(memcmp(want[0], want[1], (size_t)(5 * out_size) * sizeof(float)) != 0);
    for (t = 0; t < T; t++)
        ck_assert_int_eq(pthread_create(&tid[t], NULL, plan_work, &w[t]), 0);
    for (t = 0; t < T; t++)
        ck_assert_int_eq(pthread_join(tid[t], NULL), 0);
    for (t = 0; t < T; t++) {
        ck_assert_msg(w[t].st == TSQ_OK, "thread %d (%s workspace): %s", t,
                      w[t].caller_workspace ? "caller" : "library", w[t].msg);
        free(xs[t]);
        free(want[t]);
    }
    tsq_plan_destroy(plan);
    free(j);
    th_context_done(ctx, &st);
}
END_TEST

/* ---- 3. one context, objects created from it one at a time ---- */

static void *shared_ctx_work(void *arg)
{
    job_work(arg);
    return NULL;
}

static void *shared_ctx_plan_run(void *arg)
{
    job *j = arg;
    job_plan_run(j, j->ctx, 0);
    return NULL;
}

/* All jobs on one context: setup one by one; the work either one after the
 * other (concurrent = 0) or all at once; the plans created one by one; then
 * each plan run on the shared context with a workspace the library
 * allocates through it (plan.h: allowed when the allocator is thread-safe),
 * one after the other or all at once. */
static void run_shared_context(job *jobs, int T, int concurrent, locked_alloc *a)
{
    tsq_context *ctx = NULL;
    pthread_t tid[MAX_T];
    int t;
    memset(&a->stats, 0, sizeof a->stats);
    ck_assert_int_eq(pthread_mutex_init(&a->lock, NULL), 0);
    ck_assert_int_eq(tsq_context_create_with_allocator(&ctx, locked_alloc_fn, locked_free_fn, a),
                     TSQ_OK);
    TH_OK(ctx, tsq_context_set_seed(ctx, 5));
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 2));
    for (t = 0; t < T; t++) {
        job_setup(&jobs[t], ctx, 300 + (uint64_t)t);
        ck_assert_msg(jobs[t].st == TSQ_OK, "setup %d: %s", t, jobs[t].msg);
    }
    if (concurrent) {
        for (t = 0; t < T; t++)
            ck_assert_int_eq(pthread_create(&tid[t], NULL, shared_ctx_work, &jobs[t]), 0);
        for (t = 0; t < T; t++)
            ck_assert_int_eq(pthread_join(tid[t], NULL), 0);
    } else {
        for (t = 0; t < T; t++)
            job_work(&jobs[t]);
    }
    for (t = 0; t < T; t++) {
        ck_assert_msg(jobs[t].st == TSQ_OK, "job %d (%s): %s", t,
                      concurrent ? "concurrent" : "serial", jobs[t].msg);
        job_plan_create(&jobs[t]);
        ck_assert_msg(jobs[t].st == TSQ_OK, "plan %d: %s", t, jobs[t].msg);
    }
    if (concurrent) {
        for (t = 0; t < T; t++)
            ck_assert_int_eq(pthread_create(&tid[t], NULL, shared_ctx_plan_run, &jobs[t]), 0);
        for (t = 0; t < T; t++)
            ck_assert_int_eq(pthread_join(tid[t], NULL), 0);
    } else {
        for (t = 0; t < T; t++)
            job_plan_run(&jobs[t], ctx, 0);
    }
    for (t = 0; t < T; t++) {
        ck_assert_msg(jobs[t].st == TSQ_OK, "plan run %d: %s", t, jobs[t].msg);
        job_teardown(&jobs[t]);
    }
    tsq_context_destroy(ctx);
    ck_assert_msg(a->stats.live_blocks == 0, "%lld allocation(s) leaked",
                  (long long)a->stats.live_blocks);
    pthread_mutex_destroy(&a->lock);
}

START_TEST(test_shared_context_own_handles)
{
    const int T = thread_count();
    job *ref = calloc(MAX_T, sizeof *ref), *par = calloc(MAX_T, sizeof *par);
    locked_alloc a;
    int t;
    ck_assert(ref && par);
    run_shared_context(ref, T, 0, &a);
    run_shared_context(par, T, 1, &a);
    for (t = 0; t < T; t++)
        compare_digests(par[t].dig, ref[t].dig, t);
    free(ref);
    free(par);
}
END_TEST

static Suite *concurrency_suite(void)
{
    Suite *s = suite_create("concurrency");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_own_contexts_match_serial);
    tcase_add_test(tc, test_shared_plan);
    tcase_add_test(tc, test_shared_context_own_handles);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run(concurrency_suite());
}
