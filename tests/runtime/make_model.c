/* For tests/check_runtime.sh, linked against the full library: builds a
 * small converted CNN with random parameters (conv, batch-norm, codes,
 * two low-bit layers with fused quantizers, max-pool, a float dense last),
 * writes it as DIR/model.tsq, a random batch as DIR/input.f32, and the
 * full library's plan output for it as DIR/ref.f32.
 * Usage: make_model DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tsq.h>

#define BATCH 7
#define IMG 14

static uint64_t rng = 88172645463325252ULL;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

#define TRY(x)                                                                    \
    do {                                                                          \
        if ((x) != TSQ_OK) {                                                      \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,            \
                    tsq_context_errmsg(ctx));                                     \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

static tsq_context *ctx;

static void fill(tsq_tensor *t, double lo, double hi)
{
    int64_t n = 0, i;
    float *p = NULL;
    TRY(tsq_tensor_numel(t, &n));
    TRY(tsq_tensor_data(t, (void **)&p));
    for (i = 0; i < n; i++)
        p[i] = (float)(lo + (hi - lo) * uniform());
}

static tsq_layer *float_layer(tsq_layer *l)
{
    int32_t n = 0, i;
    TRY(tsq_layer_param_count(l, &n));
    for (i = 0; i < n; i++) {
        tsq_tensor *v = NULL;
        TRY(tsq_layer_param(l, i, &v, NULL, NULL));
        fill(v, -0.5, 0.5);
    }
    return l;
}

static tsq_layer *quant(int32_t bits, float eps, float delta, int codes)
{
    tsq_layer *l = NULL;
    TRY(tsq_layer_act_quant_create(ctx, bits, eps, delta, &l));
    TRY(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, codes ? 1.0 : 0.0));
    return l;
}

/* tsq_layer_lowbit_set takes the codes in the layer's weight shape only
 * (outputs first): give a flat codes tensor that shape. */
static tsq_status weight_shaped(tsq_layer *l, tsq_tensor *codes)
{
    tsq_tensor *w = NULL;
    int64_t shape[TSQ_MAX_DIMS];
    int32_t nd = 0;
    tsq_status st = tsq_layer_param(l, 0, &w, NULL, NULL);
    if (st == TSQ_OK)
        st = tsq_tensor_shape(w, shape, TSQ_MAX_DIMS, &nd);
    return st == TSQ_OK ? tsq_tensor_reshape(codes, nd, shape) : st;
}

static tsq_layer *lowbit(tsq_layer *l, int64_t out, int64_t in)
{
    int64_t n = out * in, i;
    tsq_tensor *codes = NULL, *alpha = NULL, *bias = NULL;
    int8_t *c = NULL;
    float *a = NULL;
    TRY(tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, &n, &codes));
    TRY(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &out, &alpha));
    TRY(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &out, &bias));
    TRY(tsq_tensor_data(codes, (void **)&c));
    TRY(tsq_tensor_data(alpha, (void **)&a));
    for (i = 0; i < n; i++)
        c[i] = (int8_t)((int)(uniform() * 3.0) - 1);
    for (i = 0; i < out; i++)
        a[i] = (float)((0.5 + uniform()) / sqrt((double)in));
    fill(bias, -0.3, 0.3);
    TRY(weight_shaped(l, codes));
    TRY(tsq_layer_lowbit_set(l, codes, alpha, bias));
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
    return l;
}

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const int64_t shape[3] = {1, IMG, IMG}, xs[4] = {BATCH, 1, IMG, IMG}, ys[2] = {BATCH, 10};
    tsq_net *net = NULL;
    tsq_plan *plan = NULL;
    tsq_layer *l = NULL;
    tsq_tensor *x = NULL, *y = NULL;
    void *buf;
    float *px = NULL, *py = NULL;
    uint64_t size = 0;
    if (argc != 2 || tsq_context_create(&ctx) != TSQ_OK)
        return 2;
    TRY(tsq_net_create(ctx, 3, shape, &net));
    TRY(tsq_layer_conv2d_create(ctx, 1, 8, 3, 3, 1, 1, &l));
    TRY(tsq_net_append(net, float_layer(l)));
    TRY(tsq_layer_batchnorm_create(ctx, 8, &l));
    TRY(tsq_net_append(net, float_layer(l)));
    TRY(tsq_net_append(net, quant(2, 0.2f, 0.4f, 1)));
    TRY(tsq_layer_lowbit_conv2d_create(ctx, 8, 12, 3, 3, 1, 1, 2, &l));
    TRY(tsq_net_append(net, lowbit(l, 12, 72)));
    TRY(tsq_net_append(net, quant(2, 0.1f, 0.3f, 1)));
    TRY(tsq_layer_maxpool2d_create(ctx, 2, 2, &l));
    TRY(tsq_net_append(net, l));
    TRY(tsq_layer_flatten_create(ctx, &l));
    TRY(tsq_net_append(net, l));
    TRY(tsq_layer_lowbit_dense_create(ctx, 12 * 7 * 7, 16, 2, &l));
    TRY(tsq_net_append(net, lowbit(l, 16, 12 * 7 * 7)));
    TRY(tsq_net_append(net, quant(2, 0.2f, 0.5f, 0)));
    TRY(tsq_layer_dense_create(ctx, 16, 10, &l));
    TRY(tsq_net_append(net, float_layer(l)));
    TRY(tsq_net_save(net, NULL, 0, &size));
    buf = malloc(size);
    TRY(tsq_net_save(net, buf, size, &size));
    write_file(argv[1], "model.tsq", buf, size);
    TRY(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 4, xs, &x));
    TRY(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, ys, &y));
    fill(x, -1.0, 1.0);
    TRY(tsq_plan_create(ctx, net, &plan));
    TRY(tsq_plan_run(ctx, plan, x, y, NULL, 0));
    TRY(tsq_tensor_data(x, (void **)&px));
    TRY(tsq_tensor_data(y, (void **)&py));
    write_file(argv[1], "input.f32", px, sizeof(float) * BATCH * IMG * IMG);
    write_file(argv[1], "ref.f32", py, sizeof(float) * BATCH * 10);
    free(buf);
    tsq_plan_destroy(plan);
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_net_destroy(net);
    tsq_context_destroy(ctx);
    return 0;
}
