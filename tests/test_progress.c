/* The progress callback (tsq_context_set_progress): every long call
 * reports its stage with done never decreasing within a run and ending at
 * total; a nonzero return cancels the call in progress with
 * TSQ_ERR_CANCELLED and a message, leaving the caller's outputs as they
 * were; a cancel at every callback index of a whole pipeline (step 1, step
 * 2, plan) frees everything (the harness counts the blocks; ASan checks the
 * rest); a NULL callback reports nothing. */
#include "nn_testutil.h"

#include <stdio.h>
#include <string.h>

#define MAX_EVENTS 4096

typedef struct event {
    int32_t stage;
    int64_t done, total;
} event;

typedef struct recorder {
    event ev[MAX_EVENTS];
    int n;
    int cancel_at; /* the index of the call that cancels; -1: never */
} recorder;

static int32_t record(void *user, int32_t stage, int64_t done, int64_t total)
{
    recorder *r = user;
    int idx = r->n;
    if (r->n < MAX_EVENTS)
        r->ev[r->n] = (event){stage, done, total};
    r->n++;
    return idx == r->cancel_at ? 7 : 0;
}

static void recorder_reset(recorder *r, int cancel_at)
{
    r->n = 0;
    r->cancel_at = cancel_at;
}

/* Within a run of a stage done never decreases and total stays; a new run
 * starts only after the previous one reached total. With `complete`, every
 * stage seen ends at total. Returns the number of stages seen. */
static int check_runs(const recorder *r, int complete)
{
    event last[8];
    int seen[8] = {0}, i, stages = 0;
    ck_assert_int_le(r->n, MAX_EVENTS);
    for (i = 0; i < r->n; i++) {
        const event *e = &r->ev[i];
        ck_assert_msg(e->stage >= TSQ_PROGRESS_QUANTIZER_FIT &&
                      e->stage <= TSQ_PROGRESS_PLAN_CREATE, "stage %d", (int)e->stage);
        ck_assert_msg(e->total >= 1 && e->done >= 0 && e->done <= e->total,
                      "event %d: %lld of %lld", i, (long long)e->done, (long long)e->total);
        if (seen[e->stage] && last[e->stage].done < last[e->stage].total) {
            ck_assert_msg(e->total == last[e->stage].total && e->done >= last[e->stage].done,
                          "event %d (%s): %lld of %lld after %lld of %lld", i,
                          tsq_progress_stage_name(e->stage), (long long)e->done,
                          (long long)e->total, (long long)last[e->stage].done,
                          (long long)last[e->stage].total);
        }
        stages += !seen[e->stage];
        seen[e->stage] = 1;
        last[e->stage] = *e;
    }
    for (i = 0; complete && i < 8; i++)
        if (seen[i])
            ck_assert_msg(last[i].done == last[i].total, "%s ended at %lld of %lld",
                          tsq_progress_stage_name(i), (long long)last[i].done,
                          (long long)last[i].total);
    return stages;
}

static int count_stage(const recorder *r, int32_t stage)
{
    int i, n = 0;
    for (i = 0; i < r->n && i < MAX_EVENTS; i++)
        n += r->ev[i].stage == stage;
    return n;
}

START_TEST(test_context_calls)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    recorder *r = calloc(1, sizeof *r);
    ck_assert_int_eq(tsq_context_set_progress(NULL, record, r), TSQ_ERR_NULL);
    TH_OK(ctx, tsq_context_set_progress(ctx, record, r));
    TH_OK(ctx, tsq_context_set_progress(ctx, NULL, r));
    ck_assert_str_eq(tsq_progress_stage_name(TSQ_PROGRESS_QUANTIZER_FIT), "quantizer fit");
    ck_assert_str_eq(tsq_progress_stage_name(TSQ_PROGRESS_NET_LEARN_CODES), "learn codes");
    ck_assert_str_eq(tsq_progress_stage_name(TSQ_PROGRESS_REGRESSOR_PASS), "regressor pass");
    ck_assert_str_eq(tsq_progress_stage_name(TSQ_PROGRESS_NET_FIT_TRANSFORM), "fit transform");
    ck_assert_str_eq(tsq_progress_stage_name(TSQ_PROGRESS_PLAN_CREATE), "plan create");
    ck_assert_str_eq(tsq_progress_stage_name(0), "unknown stage");
    ck_assert_str_eq(tsq_progress_stage_name(99), "unknown stage");
    ck_assert_ptr_nonnull(strstr(tsq_status_string(TSQ_ERR_CANCELLED), "TSQ_ERR_CANCELLED"));
    free(r);
    th_context_done(ctx, &st);
}
END_TEST

/* A 40-channel quantizer on 2 threads: reports in chunks, 0 .. 40; a
 * cancel at any report leaves every channel's (eps, delta) as the previous
 * fit left them; tsq_learn_codes leaves its codes, error and sparsity. */
START_TEST(test_quantizer_fit)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    recorder *r = calloc(1, sizeof *r);
    const int64_t C = 40;
    tsq_tensor *x = nt_tensor(ctx, 2, 64, C, 0, 0), *x2 = nt_tensor(ctx, 2, 64, C, 0, 0);
    tsq_tensor *codes = NULL;
    tsq_quantizer *q = NULL;
    float before[2 * 40];
    uint8_t *cd;
    int64_t shape[2] = {64, 40}, c, i;
    th_rng g = {3};
    int k, n;
    nt_fill_normal(x, &g, 1.0);
    nt_fill_normal(x2, &g, 3.0);
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, shape, &codes));
    TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 2));
    TH_OK(ctx, tsq_quantizer_create(ctx, 2, C, &q));
    TH_OK(ctx, tsq_quantizer_observe(q, x));
    TH_OK(ctx, tsq_context_set_progress(ctx, record, r));
    recorder_reset(r, -1);
    TH_OK(ctx, tsq_quantizer_fit(q));
    n = r->n;
    ck_assert_int_ge(n, 3);
    ck_assert_int_eq(check_runs(r, 1), 1);
    ck_assert_int_eq(r->ev[0].done, 0);
    ck_assert_int_eq(r->ev[n - 1].done, C);
    ck_assert_int_eq(count_stage(r, TSQ_PROGRESS_QUANTIZER_FIT), n);
    for (c = 0; c < C; c++)
        TH_OK(ctx, tsq_quantizer_get_channel(q, c, &before[2 * c], &before[2 * c + 1]));
    TH_OK(ctx, tsq_quantizer_observe(q, x2)); /* a later fit would change them */
    for (k = 0; k < n; k++) {
        recorder_reset(r, k);
        ck_assert_int_eq(tsq_quantizer_fit(q), TSQ_ERR_CANCELLED);
        ck_assert_int_eq(r->n, k + 1);
        ck_assert_ptr_nonnull(strstr(tsq_quantizer_errmsg(q), "cancelled by the progress"));
        for (c = 0; c < C; c++) {
            float e, d;
            TH_OK(ctx, tsq_quantizer_get_channel(q, c, &e, &d));
            ck_assert(e == before[2 * c] && d == before[2 * c + 1]);
        }
        /* tsq_learn_codes on x2: codes, error and sparsity untouched. */
        recorder_reset(r, k);
        TH_OK(ctx, tsq_tensor_data(codes, (void **)&cd));
        memset(cd, 0xAB, 64 * 40);
        {
            double err = -1.0, sp = -2.0;
            ck_assert_int_eq(tsq_learn_codes(q, x2, codes, &err, &sp), TSQ_ERR_CANCELLED);
            ck_assert(err == -1.0 && sp == -2.0);
            for (i = 0; i < 64 * 40; i++)
                ck_assert_int_eq(cd[i], 0xAB);
        }
    }
    /* Without a callback: nothing reported, nothing cancelled. */
    TH_OK(ctx, tsq_context_set_progress(ctx, NULL, NULL));
    recorder_reset(r, 0);
    TH_OK(ctx, tsq_quantizer_fit(q));
    ck_assert_int_eq(r->n, 0);
    tsq_quantizer_destroy(q);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(x2);
    free(r);
    th_context_done(ctx, &st);
}
END_TEST

/* tsq_fit_transform on a planted layer: passes reported up to the bound;
 * a cancel at any pass writes nothing and leaves no fit. */
START_TEST(test_regressor_passes)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    recorder *r = calloc(1, sizeof *r);
    const int64_t N = 150, d = 6, C = 3, xs[2] = {150, 6}, ys[2] = {150, 3}, ws[2] = {6, 3};
    const int64_t vs[1] = {3};
    tsq_tensor *X = NULL, *Y = NULL, *W = NULL, *alpha = NULL, *b = NULL;
    tsq_regressor *reg = NULL;
    uint8_t *xd, *yd;
    int8_t w[6 * 3], *wd;
    th_rng g = {9};
    int64_t i, j, c;
    double obj = -5.0;
    int k, n;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, xs, &X));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, ys, &Y));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, ws, &W));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vs, &alpha));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vs, &b));
    TH_OK(ctx, tsq_tensor_data(X, (void **)&xd));
    TH_OK(ctx, tsq_tensor_data(Y, (void **)&yd));
    TH_OK(ctx, tsq_tensor_data(W, (void **)&wd));
    for (i = 0; i < d * C; i++)
        w[i] = (int8_t)(th_rng_next(&g) % 3) - 1;
    for (i = 0; i < N * d; i++)
        xd[i] = (uint8_t)(th_rng_next(&g) % 4);
    for (i = 0; i < N; i++)
        for (c = 0; c < C; c++) {
            int32_t u = 0;
            for (j = 0; j < d; j++)
                u += xd[i * d + j] * w[j * C + c];
            yd[i * C + c] = (uint8_t)th_ref_code(0.5f * (float)u + 1.125f, 0.5f, 1.0f, 3);
        }
    TH_OK(ctx, tsq_regressor_create(ctx, &reg));
    TH_OK(ctx, tsq_regressor_set_levels(reg, 2, 0.5f, 1.0f));
    TH_OK(ctx, tsq_context_set_progress(ctx, record, r));
    recorder_reset(r, -1);
    TH_OK(ctx, tsq_fit_transform(reg, X, Y, NULL, NULL, W, alpha, b, &obj));
    n = r->n;
    ck_assert_int_ge(n, 2);
    ck_assert_int_eq(check_runs(r, 1), 1);
    ck_assert_int_eq(count_stage(r, TSQ_PROGRESS_REGRESSOR_PASS), n);
    ck_assert_int_eq(r->ev[0].done, 1); /* the statistics pass */
    for (k = 0; k < n; k++) {
        recorder_reset(r, k);
        memset(wd, 0x55, (size_t)(d * C));
        nt_data(alpha)[0] = -3.0f;
        nt_data(b)[2] = -4.0f;
        obj = -5.0;
        ck_assert_int_eq(tsq_fit_transform(reg, X, Y, NULL, NULL, W, alpha, b, &obj),
                         TSQ_ERR_CANCELLED);
        ck_assert_ptr_nonnull(strstr(tsq_regressor_errmsg(reg), "cancelled"));
        for (i = 0; i < d * C; i++)
            ck_assert_int_eq(wd[i], 0x55);
        ck_assert(nt_data(alpha)[0] == -3.0f && nt_data(b)[2] == -4.0f && obj == -5.0);
        /* No fit is left: the results are refused. */
        ck_assert_int_eq(tsq_regressor_result(reg, W, alpha, b, NULL), TSQ_ERR_STATE);
    }
    tsq_regressor_destroy(reg);
    tsq_tensor_destroy(X);
    tsq_tensor_destroy(Y);
    tsq_tensor_destroy(W);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(b);
    free(r);
    th_context_done(ctx, &st);
}
END_TEST

/* The pipeline on a small MLP: learn_codes (three quantizers),
 * fit_transform (the two middle layers), plan_create. */
typedef struct pipeline {
    tsq_tensor *batch[2];
    tsq_net *net;
    tsq_plan *plan;
    int32_t kinds[16], nlayers;
} pipeline;

static void layer_kinds(tsq_net *net, int32_t *kinds, int32_t *n)
{
    int32_t i;
    ck_assert_int_eq(tsq_net_layer_count(net, n), TSQ_OK);
    for (i = 0; i < *n; i++) {
        tsq_layer *l = NULL;
        ck_assert_int_eq(tsq_net_layer(net, i, &l), TSQ_OK);
        ck_assert_int_eq(tsq_layer_kind(l, &kinds[i]), TSQ_OK);
    }
}

static void pipeline_make(tsq_context *ctx, pipeline *p)
{
    const int64_t in[1] = {6};
    tsq_layer *L[8] = {NULL};
    th_rng g = {17};
    int b;
    memset(p, 0, sizeof *p);
    for (b = 0; b < 2; b++) {
        p->batch[b] = nt_tensor(ctx, 2, 24, 6, 0, 0);
        nt_fill_normal(p->batch[b], &g, 1.0);
    }
    TH_OK(ctx, tsq_layer_dense_create(ctx, 6, 12, &L[0]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[1]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 12, 12, &L[2]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[3]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 12, 12, &L[4]));
    TH_OK(ctx, tsq_layer_relu_create(ctx, &L[5]));
    TH_OK(ctx, tsq_layer_dense_create(ctx, 12, 3, &L[6]));
    p->net = nt_net(ctx, 1, in, L);
}

static void pipeline_free(pipeline *p)
{
    int b;
    tsq_plan_destroy(p->plan);
    tsq_net_destroy(p->net);
    for (b = 0; b < 2; b++)
        tsq_tensor_destroy(p->batch[b]);
}

/* Runs the pipeline; returns the first status other than TSQ_OK and
 * checks what the failed call left. */
static tsq_status pipeline_run(tsq_context *ctx, pipeline *p)
{
    int32_t done = 0, kinds[16], n, passes, b, lowbit_before, i;
    tsq_status st = TSQ_OK;
    layer_kinds(p->net, p->kinds, &p->nlayers);
    for (b = 0; b < 2 && st == TSQ_OK; b++)
        st = tsq_net_learn_codes(p->net, p->batch[b], b == 1, &done);
    if (st != TSQ_OK) { /* the final call failed: the net is unchanged */
        layer_kinds(p->net, kinds, &n);
        ck_assert_int_eq(n, p->nlayers);
        ck_assert(memcmp(kinds, p->kinds, (size_t)n * sizeof *kinds) == 0);
        ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(p->net), "cancelled"));
        return st;
    }
    ck_assert_int_eq(done, 1);
    for (done = 0, passes = 0; !done && passes < 200 && st == TSQ_OK; passes++) {
        layer_kinds(p->net, kinds, &n);
        for (lowbit_before = 0, i = 0; i < n; i++)
            lowbit_before += kinds[i] == TSQ_LAYER_LOWBIT_DENSE;
        for (b = 0; b < 2 && st == TSQ_OK; b++)
            st = tsq_net_fit_transform(p->net, p->batch[b], b == 1, &done);
    }
    if (st != TSQ_OK) { /* the layer being fitted is not replaced */
        int32_t lowbit = 0;
        layer_kinds(p->net, kinds, &n);
        for (i = 0; i < n; i++)
            lowbit += kinds[i] == TSQ_LAYER_LOWBIT_DENSE;
        ck_assert_int_eq(lowbit, lowbit_before);
        ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(p->net), "cancelled"));
        return st;
    }
    ck_assert_int_eq(done, 1);
    st = tsq_plan_create(ctx, p->net, &p->plan);
    if (st != TSQ_OK) {
        ck_assert_ptr_null(p->plan);
        ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "cancelled"));
    }
    return st;
}

START_TEST(test_pipeline)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    recorder *r = calloc(1, sizeof *r);
    pipeline p;
    int k, n;
    TH_OK(ctx, tsq_context_set_progress(ctx, record, r));
    recorder_reset(r, -1);
    pipeline_make(ctx, &p);
    TH_OK(ctx, pipeline_run(ctx, &p));
    n = r->n;
    ck_assert_int_eq(check_runs(r, 1), 5);
    ck_assert_int_eq(count_stage(r, TSQ_PROGRESS_NET_FIT_TRANSFORM), 3); /* 0, 1, 2 of 2 */
    ck_assert_int_eq(count_stage(r, TSQ_PROGRESS_NET_LEARN_CODES), 4);   /* 0 .. 3 of 3 */
    ck_assert_int_eq(count_stage(r, TSQ_PROGRESS_QUANTIZER_FIT), 6);     /* 0, 1 of 1, x3 */
    ck_assert_int_ge(count_stage(r, TSQ_PROGRESS_PLAN_CREATE), 2);
    ck_assert_int_ge(count_stage(r, TSQ_PROGRESS_REGRESSOR_PASS), 4);
    pipeline_free(&p);
    /* A cancel at every report: the call returns TSQ_ERR_CANCELLED, what it
     * leaves is checked in pipeline_run, nothing leaks. */
    for (k = 0; k < n; k++) {
        recorder_reset(r, k);
        pipeline_make(ctx, &p);
        ck_assert_int_eq(pipeline_run(ctx, &p), TSQ_ERR_CANCELLED);
        ck_assert_int_eq(r->n, k + 1);
        check_runs(r, 0);
        pipeline_free(&p);
    }
    free(r);
    th_context_done(ctx, &st);
}
END_TEST

/* The info-level lines of the long calls: each quantizer fit, each
 * converted layer, and a line per plan stage naming what was chosen. */
typedef struct lines {
    int fitted, converted, stages, lowbit_stage, other_level;
    int32_t nstages_said;
} lines;

static void collect(void *user, int32_t level, const char *msg)
{
    lines *l = user;
    const char *st;
    if (level != 3) {
        l->other_level++;
        return;
    }
    l->fitted += strstr(msg, "quantizer fitted on") != NULL;
    l->converted += strstr(msg, "net_fit_transform: layer") != NULL &&
                    strstr(msg, "converted to 2-bit weights, objective") != NULL;
    if ((st = strstr(msg, "plan_create: stage ")) != NULL) {
        int k = 0, n = 0;
        ck_assert_int_eq(sscanf(st, "plan_create: stage %d/%d", &k, &n), 2);
        ck_assert_int_eq(k, l->stages + 1); /* in order, each once */
        l->stages++;
        l->nstages_said = n;
        l->lowbit_stage += strstr(msg, "low-bit dense") != NULL;
    }
}

START_TEST(test_pipeline_logs)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    lines l;
    pipeline p;
    int level;
    for (level = 2; level <= 3; level++) {
        memset(&l, 0, sizeof l);
        TH_OK(ctx, tsq_context_set_log(ctx, collect, &l));
        TH_OK(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_LOG_LEVEL, level));
        pipeline_make(ctx, &p);
        TH_OK(ctx, pipeline_run(ctx, &p));
        if (level == 2) { /* below info: none of them */
            ck_assert_int_eq(l.fitted + l.converted + l.stages, 0);
        } else {
            ck_assert_int_eq(l.fitted, 3);    /* the three quantizers */
            ck_assert_int_eq(l.converted, 2); /* the two hidden dense layers */
            ck_assert_int_ge(l.stages, 3);
            ck_assert_int_eq(l.stages, l.nstages_said);
            ck_assert_int_eq(l.lowbit_stage, 2);
        }
        ck_assert_int_eq(l.other_level, 0);
        pipeline_free(&p);
    }
    TH_OK(ctx, tsq_context_set_log(ctx, NULL, NULL));
    th_context_done(ctx, &st);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600); /* the cancel at every report re-runs the pipeline ~100 times */
    tcase_add_test(tc, test_context_calls);
    tcase_add_test(tc, test_quantizer_fit);
    tcase_add_test(tc, test_regressor_passes);
    tcase_add_test(tc, test_pipeline);
    tcase_add_test(tc, test_pipeline_logs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run(suite());
}
