/* The caller-driven training loop of libtsq (docs/training-loop.md).
 *
 * The host owns the data, the epochs and the batches; libtsq owns the
 * network. Here the "dataset" is synthetic: 8x8 images with a bright
 * square in one of four quadrants, labelled by the quadrant. The program
 * trains a small CNN, then runs TSQ: step 1 (2-bit activation codes), a
 * short step-1 training, step 2 (ternary weights, layer by layer).
 *
 *   cc -std=c11 train_loop.c -ltsq -lm -o train_loop && ./train_loop
 */
#include <stdio.h>
#include <stdlib.h>

#include "tsq.h"

#define N 512   /* training images */
#define B 64    /* batch size */

static float images[N][64];
static int32_t labels[N];

static void make_data(void)
{
    unsigned s = 1;
    int i, p, a, c;
    for (i = 0; i < N; i++) {
        int q = i % 4, oy = (q / 2) * 4 + i % 2, ox = (q % 2) * 4 + (i / 2) % 2;
        for (p = 0; p < 64; p++) {
            s = s * 1103515245u + 12345u;
            images[i][p] = 0.6f * ((float)(s >> 16 & 0x7fff) / 16384.0f - 1.0f);
        }
        for (a = 0; a < 3; a++)
            for (c = 0; c < 3; c++)
                images[i][(oy + a) * 8 + ox + c] += 1.5f;
        labels[i] = q;
    }
}

#define CHECK(call)                                                            \
    do {                                                                       \
        tsq_status st_ = (call);                                               \
        if (st_ != TSQ_OK) {                                                   \
            fprintf(stderr, "%s failed: %s\n  %s | %s\n", #call,               \
                    tsq_status_string(st_), tsq_net_errmsg(net),               \
                    tsq_context_errmsg(ctx));                                  \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* Wraps batch b of the host's arrays (no copy). */
static tsq_tensor *batch(tsq_context *ctx, int b)
{
    const int64_t shape[4] = {B, 1, 8, 8};
    tsq_tensor *x = NULL;
    tsq_tensor_wrap(ctx, TSQ_DTYPE_F32, 4, shape, images[b * B], sizeof(float) * B * 64, &x);
    return x;
}

static double accuracy(tsq_context *ctx, tsq_net *net)
{
    int64_t hits = 0, correct;
    int b;
    for (b = 0; b < N / B; b++) {
        tsq_tensor *x = batch(ctx, b);
        CHECK(tsq_net_evaluate(net, x, labels + b * B, B, NULL, &correct, NULL));
        hits += correct;
        tsq_tensor_destroy(x);
    }
    return 100.0 * (double)hits / N;
}

/* The host's epochs: one tsq_net_train_step per batch. */
static void train(tsq_context *ctx, tsq_net *net, int epochs)
{
    int e, b;
    for (e = 0; e < epochs; e++) {
        double loss, sum = 0;
        for (b = 0; b < N / B; b++) {
            tsq_tensor *x = batch(ctx, b);
            CHECK(tsq_net_train_step(net, x, labels + b * B, B, &loss, NULL));
            sum += loss;
            tsq_tensor_destroy(x);
        }
        printf("  epoch %d: loss %.4f\n", e + 1, sum / (N / B));
    }
}

int main(void)
{
    const int64_t in[3] = {1, 8, 8};
    tsq_context *ctx = NULL;
    tsq_net *net = NULL;
    tsq_layer *l = NULL;
    int32_t done = 0;
    int b;

    make_data();
    if (tsq_context_create(&ctx) != TSQ_OK)
        return 1;
    tsq_context_set_seed(ctx, 42);
    CHECK(tsq_net_create(ctx, 3, in, &net));
    /* Layers are created alone; the net takes ownership on append. */
    CHECK(tsq_layer_conv2d_create(ctx, 1, 16, 3, 3, 1, 1, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_batchnorm_create(ctx, 16, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_relu_create(ctx, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_conv2d_create(ctx, 16, 32, 3, 3, 1, 1, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_batchnorm_create(ctx, 32, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_relu_create(ctx, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_maxpool2d_create(ctx, 2, 2, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_flatten_create(ctx, &l));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_dense_create(ctx, 32 * 4 * 4, 4, &l));
    CHECK(tsq_net_append(net, l));

    /* Full precision: SGD, Nesterov momentum, cosine schedule over steps. */
    CHECK(tsq_net_set_optimizer_sgd(net, 0.05, 0.9, 1, 5e-4));
    CHECK(tsq_net_set_lr_schedule(net, TSQ_LR_COSINE, 5 * (N / B), 0.0));
    printf("full precision:\n");
    train(ctx, net, 5);
    printf("  accuracy %.1f%%\n", accuracy(ctx, net));

    /* TSQ step 1: 2-bit quantizers in place of the ReLUs, then training. */
    for (b = 0; b < N / B; b++) {
        tsq_tensor *x = batch(ctx, b);
        CHECK(tsq_net_learn_codes(net, x, b == N / B - 1, &done));
        tsq_tensor_destroy(x);
    }
    CHECK(tsq_net_set_optimizer_sgd(net, 0.01, 0.9, 1, 5e-4));
    printf("step 1 (2-bit activations):\n");
    train(ctx, net, 2);
    printf("  accuracy %.1f%%\n", accuracy(ctx, net));

    /* TSQ step 2: pass after pass over the calibration batches until done.
     * By default the first conv and the last dense stay in full precision,
     * so here the second conv becomes ternary. */
    for (done = 0; !done;)
        for (b = 0; b < N / B; b++) {
            tsq_tensor *x = batch(ctx, b);
            CHECK(tsq_net_fit_transform(net, x, b == N / B - 1, &done));
            tsq_tensor_destroy(x);
        }
    printf("step 2 (ternary weights): accuracy %.1f%%\n", accuracy(ctx, net));

    tsq_net_destroy(net);
    tsq_context_destroy(ctx);
    return 0;
}
