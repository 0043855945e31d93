/* Helpers shared by the nn tests (tests/test_nn_*.c): tensors from arrays,
 * nets built from a list of layers, and a finite-difference gradient
 * checker. The generator is tests/support/rng.h's th_rng. */
#ifndef TSQ_NN_TESTUTIL_H
#define TSQ_NN_TESTUTIL_H

#include "harness.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ck_assert costs Check two writes to its log pipe even when it passes:
 * in loops over many elements, only call into Check on failure. */
#define NT_REQUIRE(cond, ...)                                                 \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg(__VA_ARGS__);                                        \
    } while (0)

static inline tsq_tensor *nt_tensor(tsq_context *ctx, int32_t ndim, int64_t d0, int64_t d1,
                                    int64_t d2, int64_t d3)
{
    int64_t shape[4] = {d0, d1, d2, d3};
    tsq_tensor *t = NULL;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, ndim, shape, &t));
    return t;
}

static inline float *nt_data(tsq_tensor *t)
{
    void *p = NULL;
    NT_REQUIRE(tsq_tensor_data(t, &p) == TSQ_OK, "tensor_data failed");
    return (float *)p;
}

/* tsq_layer_lowbit_set takes the codes in the layer's weight shape only
 * (outputs first): give a flat codes tensor that shape. */
static inline tsq_status nt_weight_shaped(tsq_layer *l, tsq_tensor *codes)
{
    tsq_tensor *w = NULL;
    int64_t shape[TSQ_MAX_DIMS];
    int32_t nd = 0;
    tsq_status st = tsq_layer_param(l, 0, &w, NULL, NULL);
    if (st == TSQ_OK)
        st = tsq_tensor_shape(w, shape, TSQ_MAX_DIMS, &nd);
    return st == TSQ_OK ? tsq_tensor_reshape(codes, nd, shape) : st;
}

static inline int64_t nt_numel(const tsq_tensor *t)
{
    int64_t n = 0;
    NT_REQUIRE(tsq_tensor_numel(t, &n) == TSQ_OK, "tensor_numel failed");
    return n;
}

static inline void nt_fill_normal(tsq_tensor *t, th_rng *r, double scale)
{
    float *d = nt_data(t);
    int64_t i, n = nt_numel(t);
    for (i = 0; i < n; i++)
        d[i] = (float)(scale * th_rng_normal(r));
}

/* Net of sample shape (s0[,s1,s2]) from a NULL-terminated list of layers. */
static inline tsq_net *nt_net(tsq_context *ctx, int32_t ndim, const int64_t *shape,
                              tsq_layer **layers)
{
    tsq_net *net = NULL;
    int i;
    TH_OK(ctx, tsq_net_create(ctx, ndim, shape, &net));
    for (i = 0; layers[i]; i++) {
        tsq_status st = tsq_net_append(net, layers[i]);
        ck_assert_msg(st == TSQ_OK, "append %d: %s", i, tsq_net_errmsg(net));
    }
    return net;
}

/* L = sum_i y_i r_i for the net's output y on x (train or eval mode). */
static inline double nt_loss(tsq_net *net, tsq_tensor *x, tsq_tensor *y, const float *r,
                             int32_t train)
{
    const float *yd;
    double L = 0.0;
    int64_t i, n = nt_numel(y);
    tsq_status st = tsq_net_forward(net, x, y, train);
    NT_REQUIRE(st == TSQ_OK, "forward: %s", tsq_net_errmsg(net));
    yd = nt_data(y);
    for (i = 0; i < n; i++)
        L += (double)yd[i] * (double)r[i];
    return L;
}

/* Compares an analytic gradient g (of L w.r.t. the n floats at v) with
 * central differences at `probes` evenly spread positions.  Tolerance:
 * |fd - g| <= atol + rtol |g|. Returns the worst ratio err / tol (<= 1
 * passes). */
static inline double nt_fd_check(tsq_net *net, tsq_tensor *x, tsq_tensor *y, const float *r,
                                 int32_t train, float *v, const float *g, int64_t n,
                                 int64_t probes, double h, double atol, double rtol,
                                 const char *what)
{
    double worst = 0.0;
    int64_t p, step = n > probes ? n / probes : 1;
    for (p = 0; p < n; p += step) {
        float keep = v[p];
        double lp, lm, fd, err, tol;
        v[p] = (float)(keep + h);
        lp = nt_loss(net, x, y, r, train);
        v[p] = (float)(keep - h);
        lm = nt_loss(net, x, y, r, train);
        v[p] = keep;
        fd = (lp - lm) / (2.0 * h);
        err = fabs(fd - (double)g[p]);
        tol = atol + rtol * fabs((double)g[p]);
        NT_REQUIRE(err <= tol, "%s[%lld]: finite difference %.6g, analytic %.6g", what,
                   (long long)p, fd, (double)g[p]);
        if (err / tol > worst)
            worst = err / tol;
    }
    return worst;
}

/* Full gradient check of a net: dx and every parameter except one named
 * `skip` (NULL: none). x is filled by the caller; r is drawn here. */
static inline void nt_gradcheck(tsq_context *ctx, tsq_net *net, tsq_tensor *x, int32_t train,
                                th_rng *rng, double h, double atol, double rtol,
                                const char *skip)
{
    int64_t oshape[3], n = 0, on = 1, i;
    int32_t ond = 0, np = 0, k;
    tsq_tensor *y, *dy, *dx, *xs;
    float *r;
    ck_assert_int_eq(tsq_tensor_dim(x, 0, &n), TSQ_OK);
    TH_OK(ctx, tsq_net_output_shape(net, oshape, 3, &ond));
    for (i = 0; i < ond; i++)
        on *= oshape[i];
    y = nt_tensor(ctx, 2, n, on, 0, 0);
    dy = nt_tensor(ctx, 2, n, on, 0, 0);
    dx = nt_tensor(ctx, 2, n, nt_numel(x) / n, 0, 0);
    nt_fill_normal(dy, rng, 1.0);
    r = nt_data(dy);
    (void)nt_loss(net, x, y, r, train);
    ck_assert_msg(tsq_net_backward(net, dy, dx) == TSQ_OK, "backward: %s", tsq_net_errmsg(net));
    /* Keep a copy of the analytic gradients: the probes run forwards only,
     * but keep them apart anyway. */
    xs = nt_tensor(ctx, 1, nt_numel(x), 0, 0, 0);
    memcpy(nt_data(xs), nt_data(dx), (size_t)nt_numel(x) * sizeof(float));
    nt_fd_check(net, x, y, r, train, nt_data(x), nt_data(xs), nt_numel(x), 40, h, atol, rtol,
                "dx");
    tsq_tensor_destroy(xs);
    TH_OK(ctx, tsq_net_param_count(net, &np));
    for (k = 0; k < np; k++) {
        tsq_tensor *v = NULL, *g = NULL, *gs;
        const char *name = NULL;
        TH_OK(ctx, tsq_net_param(net, k, &v, &g, NULL, &name));
        if (skip && strcmp(name, skip) == 0)
            continue;
        gs = nt_tensor(ctx, 1, nt_numel(g), 0, 0, 0);
        memcpy(nt_data(gs), nt_data(g), (size_t)nt_numel(g) * sizeof(float));
        nt_fd_check(net, x, y, r, train, nt_data(v), nt_data(gs), nt_numel(v), 30, h, atol, rtol,
                    name);
        tsq_tensor_destroy(gs);
    }
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(dy);
    tsq_tensor_destroy(dx);
}

/* A low-bit layer's codes of wbits bits at random, alpha scaled so that alpha * acc is O(1), random bias. */
static inline void nt_set_lowbit(tsq_context *ctx, tsq_layer *l, int64_t out, int64_t in,
                                 int32_t wbits, th_rng *r)
{
    int64_t shape[1] = {out * in}, i;
    int32_t m = (1 << (wbits - 1)) - 1;
    tsq_tensor *codes = NULL, *alpha = nt_tensor(ctx, 1, out, 0, 0, 0);
    tsq_tensor *bias = nt_tensor(ctx, 1, out, 0, 0, 0);
    int8_t *c;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, shape, &codes));
    TH_OK(ctx, tsq_tensor_data(codes, (void **)&c));
    for (i = 0; i < out * in; i++)
        c[i] = (int8_t)((int64_t)(th_rng_next(r) % (uint64_t)(2 * m + 1)) - m);
    for (i = 0; i < out; i++) {
        nt_data(alpha)[i] = (float)((0.5 + th_rng_uniform(r)) / sqrt((double)in));
        nt_data(bias)[i] = (float)(0.3 * th_rng_normal(r));
    }
    TH_OK(ctx, nt_weight_shaped(l, codes));
    TH_OK(ctx, tsq_layer_lowbit_set(l, codes, alpha, bias));
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
}

/* Every parameter of a float layer from N(0, 0.25). */
static inline void nt_randomize_float(tsq_context *ctx, tsq_layer *l, th_rng *r)
{
    int32_t n = 0, i;
    TH_OK(ctx, tsq_layer_param_count(l, &n));
    for (i = 0; i < n; i++) {
        tsq_tensor *v = NULL;
        TH_OK(ctx, tsq_layer_param(l, i, &v, NULL, NULL));
        nt_fill_normal(v, r, 0.5);
    }
}

#endif
