/* Writes the seed corpora of the libFuzzer targets, from the library itself:
 *
 *   make fuzz-seeds                      (builds this program and runs it), or
 *   make_seeds tests/fuzz/corpus         (writes model/, quantizer/, options/)
 *
 * model/      small nets saved with tsq_net_save: a float CNN (conv, BN,
 *             ReLU, max-pool, flatten, dense), a converted net (per-channel
 *             codes quantizer, ternary conv, 4-bit dense, BN, dense) that
 *             tsq_plan_create accepts, a net ending in global average pool,
 *             an empty net; then variants of the converted one: truncated,
 *             version 2, a flipped payload byte, and a few hand-made inputs.
 * quantizer/  saved quantizers: per tensor fitted, per channel fitted (by
 *             tsq_learn_codes), per channel partly set, 8 bits with sparsity
 *             mode; a version-2 copy, a truncated copy, bad magic.
 * options/    operation sequences for fuzz_options.c (its header describes
 *             the 14-byte operation): every handle with every small key, in
 *             each value mode, and each handle's special call.
 * Every seed is well under 64 KB. The output is deterministic, so rerunning
 * it changes no committed file unless the library's formats change. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h" /* the CRC-32 and little-endian helpers */

static const char *root;

#define CHECK(expr)                                                              \
    do {                                                                         \
        tsq_status st_ = (expr);                                                 \
        if (st_ != TSQ_OK) {                                                     \
            fprintf(stderr, "make_seeds: %s: %s\n", #expr, tsq_status_string(st_)); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    FILE *f;
    if (n > 65536) {
        fprintf(stderr, "make_seeds: %s/%s has %zu bytes (limit 64 KB)\n", dir, name, n);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s", root, dir);
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(rng >> 40) / (float)(1 << 24) - 0.5f;
}

static void fill(tsq_tensor *t, float scale, float offset)
{
    float *x = NULL;
    int64_t n = 0, i;
    tsq_tensor_data(t, (void **)&x);
    tsq_tensor_numel(t, &n);
    for (i = 0; i < n; i++)
        x[i] = offset + scale * uniform();
}

/* Random float parameters, and BN statistics with a positive variance. */
static void randomize(tsq_net *net)
{
    int32_t nl = 0, i, j, n;
    tsq_net_layer_count(net, &nl);
    for (i = 0; i < nl; i++) {
        tsq_layer *l = NULL;
        int32_t kind = 0;
        tsq_net_layer(net, i, &l);
        tsq_layer_kind(l, &kind);
        if (kind == TSQ_LAYER_LOWBIT_DENSE || kind == TSQ_LAYER_LOWBIT_CONV2D)
            continue;
        n = 0;
        tsq_layer_param_count(l, &n);
        for (j = 0; j < n; j++) {
            tsq_tensor *p = NULL;
            tsq_layer_param(l, j, &p, NULL, NULL);
            fill(p, 1.5f, 0.0f);
        }
        n = 0;
        tsq_layer_state_count(l, &n);
        for (j = 0; j < n; j++) {
            tsq_tensor *p = NULL;
            const char *name = NULL;
            tsq_layer_state(l, j, &p, &name);
            if (strcmp(name, "running_var") == 0)
                fill(p, 0.5f, 1.0f);
            else
                fill(p, 0.5f, 0.0f);
        }
    }
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

static void lowbit(tsq_context *ctx, tsq_layer *l, int64_t out, int64_t count, int32_t bits)
{
    int32_t m = (1 << (bits - 1)) - 1;
    tsq_tensor *codes = NULL, *alpha = NULL, *bias = NULL;
    int8_t *c = NULL;
    int64_t i;
    CHECK(tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, &count, &codes));
    CHECK(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &out, &alpha));
    CHECK(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &out, &bias));
    tsq_tensor_data(codes, (void **)&c);
    for (i = 0; i < count; i++)
        c[i] = (int8_t)((i * 7 + i / 3) % (2 * m + 1) - m);
    fill(alpha, 0.1f, 0.2f);
    fill(bias, 1.0f, 0.0f);
    CHECK(weight_shaped(l, codes));
    CHECK(tsq_layer_lowbit_set(l, codes, alpha, bias));
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
}

/* The layer is read through a pointer, after the constructor (an argument
 * evaluated in unspecified order) has run. */
static void append(tsq_net *net, tsq_status st, tsq_layer *const *l)
{
    CHECK(st);
    CHECK(tsq_net_append(net, *l));
}

static uint8_t *save_net(tsq_net *net, size_t *n)
{
    uint64_t size = 0;
    uint8_t *buf;
    CHECK(tsq_net_save(net, NULL, 0, &size));
    buf = malloc((size_t)size);
    CHECK(tsq_net_save(net, buf, size, &size));
    *n = (size_t)size;
    return buf;
}

static void model_seeds(tsq_context *ctx)
{
    const int64_t img[3] = {1, 6, 6}, vec[1] = {5};
    tsq_net *net = NULL;
    tsq_layer *l = NULL;
    uint8_t *buf;
    size_t n;
    int32_t c;

    /* a float CNN */
    CHECK(tsq_net_create(ctx, 3, img, &net));
    append(net, tsq_layer_conv2d_create(ctx, 1, 2, 3, 3, 1, 1, &l), &l);
    append(net, tsq_layer_batchnorm_create(ctx, 2, &l), &l);
    append(net, tsq_layer_relu_create(ctx, &l), &l);
    append(net, tsq_layer_maxpool2d_create(ctx, 2, 2, &l), &l);
    append(net, tsq_layer_flatten_create(ctx, &l), &l);
    append(net, tsq_layer_dense_create(ctx, 18, 3, &l), &l);
    randomize(net);
    buf = save_net(net, &n);
    write_file("model", "float_cnn.tsq", buf, n);
    free(buf);
    tsq_net_destroy(net);

    /* a converted net, as tsq_net_fit_transform leaves one */
    CHECK(tsq_net_create(ctx, 3, img, &net));
    append(net, tsq_layer_conv2d_create(ctx, 1, 3, 3, 3, 1, 1, &l), &l);
    append(net, tsq_layer_batchnorm_create(ctx, 3, &l), &l);
    CHECK(tsq_layer_act_quant_create(ctx, 2, 0.1f, 0.4f, &l));
    for (c = 0; c < 3; c++)
        CHECK(tsq_layer_act_quant_set_channel(l, c, 3, 2, 0.05f * (float)c, 0.3f + 0.1f * (float)c));
    CHECK(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1));
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_lowbit_conv2d_create(ctx, 3, 2, 3, 3, 1, 1, 2, &l));
    lowbit(ctx, l, 2, 2 * 3 * 9, 2);
    CHECK(tsq_net_append(net, l));
    CHECK(tsq_layer_act_quant_create(ctx, 2, 0.3f, 0.6f, &l));
    CHECK(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1));
    CHECK(tsq_net_append(net, l));
    append(net, tsq_layer_maxpool2d_create(ctx, 2, 2, &l), &l);
    append(net, tsq_layer_flatten_create(ctx, &l), &l);
    CHECK(tsq_layer_lowbit_dense_create(ctx, 18, 4, 4, &l));
    lowbit(ctx, l, 4, 18 * 4, 4);
    CHECK(tsq_net_append(net, l));
    append(net, tsq_layer_batchnorm_create(ctx, 4, &l), &l);
    append(net, tsq_layer_dense_create(ctx, 4, 3, &l), &l);
    randomize(net);
    {
        tsq_plan *plan = NULL;
        CHECK(tsq_plan_create(ctx, net, &plan)); /* the seed must reach the plan */
        tsq_plan_destroy(plan);
    }
    buf = save_net(net, &n);
    write_file("model", "converted.tsq", buf, n);
    write_file("model", "converted_truncated.tsq", buf, n / 2);
    fz_put_u32(buf + 4, 2); /* a newer format version, with a valid header CRC */
    fz_put_u32(buf + 12, fz_crc32(buf, 12));
    write_file("model", "converted_version2.tsq", buf, n);
    fz_put_u32(buf + 4, 1);
    fz_put_u32(buf + 12, fz_crc32(buf, 12));
    buf[n - 40] ^= 0x10; /* a payload byte of the last layer: CRC mismatch */
    write_file("model", "converted_flipped.tsq", buf, n);
    free(buf);
    tsq_net_destroy(net);

    /* global average pool, per-tensor quantizer in values mode */
    CHECK(tsq_net_create(ctx, 3, img, &net));
    append(net, tsq_layer_conv2d_create(ctx, 1, 4, 3, 3, 2, 0, &l), &l);
    append(net, tsq_layer_act_quant_create(ctx, 3, 0.2f, 0.25f, &l), &l);
    append(net, tsq_layer_global_avgpool_create(ctx, &l), &l);
    append(net, tsq_layer_dense_create(ctx, 4, 2, &l), &l);
    randomize(net);
    buf = save_net(net, &n);
    write_file("model", "avgpool.tsq", buf, n);
    free(buf);
    tsq_net_destroy(net);

    /* an empty net on vectors */
    CHECK(tsq_net_create(ctx, 1, vec, &net));
    buf = save_net(net, &n);
    write_file("model", "empty.tsq", buf, n);
    free(buf);
    tsq_net_destroy(net);

    /* hand-made */
    write_file("model", "magic_only", "TSQM", 4);
    {
        uint8_t h[16] = {'T', 'S', 'Q', 'M', 1, 0, 0, 0, 0, 0, 0, 0};
        fz_put_u32(h + 12, fz_crc32(h, 12));
        write_file("model", "zero_sections", h, sizeof h);
    }
}

static uint8_t *save_q(tsq_quantizer *q, size_t *n)
{
    uint64_t size = 0;
    uint8_t *buf;
    CHECK(tsq_quantizer_save(q, NULL, 0, &size));
    buf = malloc((size_t)size);
    CHECK(tsq_quantizer_save(q, buf, size, &size));
    *n = (size_t)size;
    return buf;
}

static void quantizer_seeds(tsq_context *ctx)
{
    tsq_quantizer *q = NULL;
    tsq_tensor *x = NULL;
    const int64_t shape[3] = {4, 3, 5};
    uint8_t *buf;
    size_t n;

    CHECK(tsq_quantizer_create(ctx, 2, 0, &q));
    CHECK(tsq_quantizer_set_channel(q, 0, 0.32f, 0.5f));
    buf = save_q(q, &n);
    write_file("quantizer", "per_tensor_fitted.tsqq", buf, n);
    free(buf);
    tsq_quantizer_destroy(q);

    CHECK(tsq_quantizer_create(ctx, 3, 3, &q));
    CHECK(tsq_tensor_create(ctx, TSQ_DTYPE_F32, 3, shape, &x));
    fill(x, 4.0f, 0.5f);
    CHECK(tsq_learn_codes(q, x, NULL, NULL, NULL));
    buf = save_q(q, &n);
    write_file("quantizer", "per_channel_learned.tsqq", buf, n);
    fz_put_u32(buf + 4, 2);
    fz_put_u32(buf + n - 4, fz_crc32(buf, n - 4));
    write_file("quantizer", "version2.tsqq", buf, n);
    write_file("quantizer", "truncated.tsqq", buf, n - 5);
    memcpy(buf, "TSQX", 4);
    write_file("quantizer", "bad_magic.tsqq", buf, n);
    free(buf);
    tsq_tensor_destroy(x);
    tsq_quantizer_destroy(q);

    CHECK(tsq_quantizer_create(ctx, 4, 5, &q));
    CHECK(tsq_quantizer_set_channel(q, 1, 0.0f, 0.125f));
    CHECK(tsq_quantizer_set_channel(q, 3, 1.0f, 2.0f));
    buf = save_q(q, &n);
    write_file("quantizer", "per_channel_partial.tsqq", buf, n);
    free(buf);
    tsq_quantizer_destroy(q);

    CHECK(tsq_quantizer_create(ctx, 8, 0, &q));
    CHECK(tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, TSQ_EPS_SPARSITY));
    CHECK(tsq_quantizer_set_option(q, TSQ_QUANTIZER_SPARSITY, 0.5));
    CHECK(tsq_quantizer_set_option(q, TSQ_QUANTIZER_HIST_RESOLUTION, 9));
    CHECK(tsq_quantizer_set_channel(q, 0, 0.01f, 0.015625f));
    buf = save_q(q, &n);
    write_file("quantizer", "bits8_sparsity.tsqq", buf, n);
    free(buf);
    tsq_quantizer_destroy(q);
}

/* ---- options: 14-byte operations (see fuzz_options.c) ---------------------- */

#define NHANDLES 30 /* at least the number of handles fuzz_options.c makes */

static void op(uint8_t *p, int handle, int action, int vmode, int raw_key, int32_t key,
               const uint8_t value[8])
{
    p[0] = (uint8_t)handle;
    p[1] = (uint8_t)(action | vmode << 2 | (raw_key ? 0x10 : 0));
    fz_put_u32(p + 2, (uint32_t)key);
    memcpy(p + 6, value, 8);
}

/* Writes the operations in files of at most 64 (fuzz_options.c's MAX_OPS):
 * small inputs keep the fuzzer fast. */
static void write_ops(const char *name, const uint8_t *buf, size_t n)
{
    size_t chunk = 64 * 14, off;
    int part = 0;
    for (off = 0; off < n; off += chunk, part++) {
        char file[64];
        snprintf(file, sizeof file, "%s_%02d", name, part);
        write_file("options", file, buf + off, n - off < chunk ? n - off : chunk);
    }
}

static void options_seeds(void)
{
    static uint8_t buf[512 * 14];
    uint8_t v[8];
    size_t n;
    int h, k, mode;

    /* every handle: get and bounds of every small key */
    n = 0;
    for (h = 0; h < NHANDLES; h++)
        for (k = 0; k < 16; k += 1) {
            memset(v, 0, 8);
            op(buf + n, h, k % 2 ? 2 : 1, 0, 0, k, v);
            n += 14;
        }
    write_ops("get_bounds_all", buf, n);

    /* sets in each value mode: small integers, edge values, eighths */
    for (mode = 1; mode <= 3; mode++) {
        char name[32];
        n = 0;
        for (h = 0; h < NHANDLES && n + 14 * 16 <= sizeof buf; h++)
            for (k = 0; k < 16; k++) {
                memset(v, 0, 8);
                v[0] = (uint8_t)(mode == 2 ? (h * 16 + k) % 59 : (k * 3 + h) % 13);
                op(buf + n, h, 0, mode, 0, k, v);
                n += 14;
            }
        snprintf(name, sizeof name, "sets_mode%d", mode);
        write_ops(name, buf, n);
    }

    /* special calls: seed, quantizer and act_quant channels, alphabets,
     * layer info, plan_get, tensor fill */
    n = 0;
    for (h = 0; h < NHANDLES; h++)
        for (k = 0; k < 6; k++) {
            int32_t key = k < 3 ? k : (int32_t)(k - 3) | ((k - 2) << 8) | (3 << 16);
            double d = 0.5 * k;
            memcpy(v, &d, 8);
            if (k == 4) { /* an alphabet: -2 .. 2 */
                int i;
                for (i = 0; i < 8; i++)
                    v[i] = (uint8_t)(int8_t)(i % 5 - 2);
                key = 5;
            }
            if (k == 5) { /* eps 0.25, delta 0.5 as floats */
                float e = 0.25f, dl = 0.5f;
                memcpy(v, &e, 4);
                memcpy(v + 4, &dl, 4);
            }
            op(buf + n, h, 3, 0, 1, key, v);
            n += 14;
            op(buf + n, h, 3, 1, 1, key, v);
            n += 14;
        }
    write_ops("specials", buf, n);
}

int main(int argc, char **argv)
{
    tsq_context *ctx = NULL;
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds <corpus directory>\n");
        return 2;
    }
    root = argv[1];
    CHECK(tsq_context_create(&ctx));
    model_seeds(ctx);
    quantizer_seeds(ctx);
    options_seeds();
    tsq_context_destroy(ctx);
    return 0;
}
