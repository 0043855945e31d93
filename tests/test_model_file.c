/* The .tsq model file: bit-identical round trips, a corrupted byte in each
 * section detected, every truncation refused, version checks, allocation
 * failure at every step of a load, and the generic record reader of io/
 * used on its own (what an inference-only reader builds on). */
#include "harness.h"

#include "io/model_records.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IN_C 1
#define IN_H 6
#define IN_W 6
#define BATCH 5

/* Uniform in [-scale/2, scale/2). */
static void fill_random(tsq_tensor *t, th_rng *r, float scale)
{
    float *x = NULL;
    int64_t n = 0, i;
    tsq_tensor_data(t, (void **)&x);
    tsq_tensor_numel(t, &n);
    for (i = 0; i < n; i++)
        x[i] = scale * ((float)th_rng_uniform(r) - 0.5f);
}

static void append(tsq_net *net, tsq_layer *l)
{
    ck_assert_ptr_nonnull(l);
    ck_assert_msg(tsq_net_append(net, l) == TSQ_OK, "%s", tsq_net_errmsg(net));
}

/* A small network with every kind the format holds: conv, BN, ReLU, a
 * per-channel quantizer, max-pool, a low-bit conv, a low-bit dense,
 * flatten, global average pool is separate, dense. */
static tsq_net *make_net(tsq_context *ctx)
{
    const int64_t shape[3] = {IN_C, IN_H, IN_W};
    tsq_net *net = NULL;
    tsq_layer *l = NULL;
    tsq_tensor *codes = NULL, *alpha = NULL, *bias = NULL, *p;
    th_rng seed = {42};
    int32_t i, j, n, nl;
    int64_t nw = 4 * 4 * 3 * 3, c4 = 4, nd = 8 * 36, c8 = 8;
    int8_t *cw;
    float *a;

    TH_OK(ctx, tsq_net_create(ctx, 3, shape, &net));
    TH_OK(ctx, tsq_layer_conv2d_create(ctx, IN_C, 4, 3, 3, 1, 1, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 4, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_relu_create(ctx, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.1f, 0.4f, &l));
    append(net, l);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(tsq_layer_act_quant_set_channel(l, i, 4, 2, 0.05f * (float)i,
                                                         0.3f + 0.1f * (float)i), TSQ_OK);
    ck_assert_int_eq(tsq_layer_set_option(l, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1), TSQ_OK);
    /* ternary conv on codes */
    TH_OK(ctx, tsq_layer_lowbit_conv2d_create(ctx, 4, 4, 3, 3, 1, 1, 2, &l));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, &nw, &codes));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &c4, &alpha));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &c4, &bias));
    tsq_tensor_data(codes, (void **)&cw);
    for (j = 0; j < nw; j++)
        cw[j] = (int8_t)((j * 7 % 3) - 1);
    fill_random(bias, &seed, 1.0f);
    tsq_tensor_data(alpha, (void **)&a);
    for (j = 0; j < 4; j++)
        a[j] = 0.25f + 0.125f * (float)j;
    TH_OK(ctx, tsq_tensor_reshape(codes, 4, (const int64_t[]){4, 4, 3, 3}));
    ck_assert_msg(tsq_layer_lowbit_set(l, codes, alpha, bias) == TSQ_OK, "%s",
                  tsq_layer_errmsg(l));
    append(net, l);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(bias);
    TH_OK(ctx, tsq_layer_act_quant_create(ctx, 2, 0.3f, 0.6f, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_flatten_create(ctx, &l));
    append(net, l);
    /* 4-bit dense */
    TH_OK(ctx, tsq_layer_lowbit_dense_create(ctx, 4 * 36, 8, 4, &l));
    nd = 4 * 36 * 8;
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_I8, 1, &nd, &codes));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, &c8, &alpha));
    tsq_tensor_data(codes, (void **)&cw);
    for (j = 0; j < nd; j++)
        cw[j] = (int8_t)((j * 5 % 15) - 7);
    TH_OK(ctx, tsq_tensor_fill(alpha, 0.01));
    TH_OK(ctx, tsq_tensor_reshape(codes, 2, (const int64_t[]){8, 4 * 36}));
    ck_assert_msg(tsq_layer_lowbit_set(l, codes, alpha, NULL) == TSQ_OK, "%s",
                  tsq_layer_errmsg(l));
    append(net, l);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    TH_OK(ctx, tsq_layer_batchnorm_create(ctx, 8, &l));
    append(net, l);
    TH_OK(ctx, tsq_layer_dense_create(ctx, 8, 3, &l));
    append(net, l);
    /* Random float parameters and BN statistics everywhere they exist. */
    TH_OK(ctx, tsq_net_layer_count(net, &nl));
    for (i = 0; i < nl; i++) {
        int32_t kind;
        tsq_net_layer(net, i, &l);
        tsq_layer_kind(l, &kind);
        if (kind == TSQ_LAYER_LOWBIT_CONV2D || kind == TSQ_LAYER_LOWBIT_DENSE)
            continue;
        tsq_layer_param_count(l, &n);
        for (j = 0; j < n; j++) {
            tsq_layer_param(l, j, &p, NULL, NULL);
            fill_random(p, &seed, 2.0f);
        }
        tsq_layer_state_count(l, &n);
        for (j = 0; j < n; j++) {
            const char *name;
            tsq_layer_state(l, j, &p, &name);
            fill_random(p, &seed, 1.0f);
            if (strcmp(name, "running_var") == 0) {
                float *v;
                int64_t k, m;
                tsq_tensor_data(p, (void **)&v);
                tsq_tensor_numel(p, &m);
                for (k = 0; k < m; k++)
                    v[k] = 0.5f + fabsf(v[k]);
            }
        }
    }
    return net;
}

static void run(tsq_context *ctx, tsq_net *net, float *out)
{
    const int64_t xs[4] = {BATCH, IN_C, IN_H, IN_W}, ys[2] = {BATCH, 3};
    tsq_tensor *x = NULL, *y = NULL;
    th_rng seed = {7};
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 4, xs, &x));
    TH_OK(ctx, tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, ys, &y));
    fill_random(x, &seed, 4.0f);
    ck_assert_msg(tsq_net_forward(net, x, y, 0) == TSQ_OK, "%s", tsq_net_errmsg(net));
    TH_OK(ctx, tsq_tensor_copy_out(y, out, BATCH * 3 * sizeof(float)));
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
}

static uint8_t *save(tsq_context *ctx, tsq_net *net, uint64_t *size)
{
    uint8_t *buf;
    ck_assert_msg(tsq_net_save(net, NULL, 0, size) == TSQ_OK, "%s", tsq_net_errmsg(net));
    buf = malloc(*size);
    ck_assert_msg(tsq_net_save(net, buf, *size, size) == TSQ_OK, "%s", tsq_net_errmsg(net));
    (void)ctx;
    return buf;
}

START_TEST(test_round_trip_bit_identical)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx), *back = NULL;
    float y1[BATCH * 3], y2[BATCH * 3];
    uint64_t size, size2;
    uint8_t *buf, *buf2;
    int32_t n1, n2;
    run(ctx, net, y1);
    buf = save(ctx, net, &size);
    ck_assert_msg(tsq_net_load(ctx, buf, size, &back) == TSQ_OK, "%s", tsq_context_errmsg(ctx));
    tsq_net_layer_count(net, &n1);
    tsq_net_layer_count(back, &n2);
    ck_assert_int_eq(n1, n2);
    run(ctx, back, y2);
    ck_assert_mem_eq(y1, y2, sizeof y1);
    /* Saving the loaded net reproduces the same bytes. */
    buf2 = save(ctx, back, &size2);
    ck_assert_uint_eq(size, size2);
    ck_assert_mem_eq(buf, buf2, size);
    free(buf);
    free(buf2);
    tsq_net_destroy(net);
    tsq_net_destroy(back);
    th_context_done(ctx, &st);
}
END_TEST

/* Section boundaries of a saved model, read back from the frames. */
static int sections(const uint8_t *buf, uint64_t size, uint64_t *start, int cap)
{
    uint64_t pos = 16;
    int n = 0;
    while (pos + 12 <= size && n < cap) {
        uint64_t len = 0;
        int k;
        for (k = 0; k < 8; k++)
            len |= (uint64_t)buf[pos + 4 + k] << (8 * k);
        start[n++] = pos;
        pos += 12 + len + 4;
    }
    return n;
}

START_TEST(test_corrupt_byte_in_each_section)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx), *back = (tsq_net *)&st;
    uint64_t size, start[64];
    uint8_t *buf = save(ctx, net, &size);
    int n = sections(buf, size, start, 64), s;
    int32_t nl;
    char want[32];
    tsq_net_layer_count(net, &nl);
    ck_assert_int_eq(n, nl + 1);
    for (s = 0; s < n; s++) {
        uint64_t end = s + 1 < n ? start[s + 1] : size, pos;
        /* the tag, the length, the middle of the payload and the CRC itself */
        uint64_t probes[4] = {start[s], start[s] + 5, (start[s] + 12 + end) / 2, end - 1};
        int k;
        for (k = 0; k < 4; k++) {
            pos = probes[k];
            buf[pos] ^= 0x5a;
            ck_assert_int_eq(tsq_net_load(ctx, buf, size, &back), TSQ_ERR_FORMAT);
            ck_assert_ptr_null(back);
            snprintf(want, sizeof want, "section %d", s);
            ck_assert_msg(strstr(tsq_context_errmsg(ctx), want) != NULL,
                          "flip at %llu: %s", (unsigned long long)pos, tsq_context_errmsg(ctx));
            buf[pos] ^= 0x5a;
        }
    }
    /* The header: magic, version, count, header CRC. */
    buf[1] ^= 1;
    ck_assert_int_eq(tsq_net_load(ctx, buf, size, &back), TSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "magic"));
    buf[1] ^= 1;
    buf[9] ^= 1;
    ck_assert_int_eq(tsq_net_load(ctx, buf, size, &back), TSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "header checksum"));
    buf[9] ^= 1;
    free(buf);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_every_truncation_refused)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx), *back = NULL;
    uint64_t size, cut;
    uint8_t *buf = save(ctx, net, &size), *copy;
    for (cut = 0; cut < size; cut++) {
        /* a fresh allocation of exactly `cut` bytes lets ASan catch any overread */
        copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        ck_assert_int_eq(tsq_net_load(ctx, copy, cut, &back), TSQ_ERR_FORMAT);
        ck_assert_ptr_null(back);
        free(copy);
    }
    /* And one byte too many. */
    copy = malloc(size + 1);
    memcpy(copy, buf, size);
    copy[size] = 0;
    ck_assert_int_eq(tsq_net_load(ctx, copy, size + 1, &back), TSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "after the last section"));
    free(copy);
    free(buf);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

/* Rewrites a header field and its CRC, as a newer or foreign writer would. */
static void set_header_u32(tsq_context *ctx, uint8_t *buf, int offset, uint32_t v)
{
    tsq_net *tmp = NULL;
    uint32_t crc;
    int k;
    (void)ctx;
    (void)tmp;
    for (k = 0; k < 4; k++)
        buf[offset + k] = (uint8_t)(v >> (8 * k));
    /* zlib's CRC-32 through a tiny local implementation */
    crc = 0xffffffffu;
    for (k = 0; k < 12; k++) {
        int b;
        crc ^= buf[k];
        for (b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    crc ^= 0xffffffffu;
    for (k = 0; k < 4; k++)
        buf[12 + k] = (uint8_t)(crc >> (8 * k));
}

START_TEST(test_versions)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx), *back = NULL;
    uint64_t size;
    uint8_t *buf = save(ctx, net, &size);
    ck_assert_int_eq(buf[4], TSQ_MODEL_FORMAT_VERSION);
    set_header_u32(ctx, buf, 4, TSQ_MODEL_FORMAT_VERSION + 1);
    ck_assert_int_eq(tsq_net_load(ctx, buf, size, &back), TSQ_ERR_VERSION);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "format version 2"));
    set_header_u32(ctx, buf, 4, 0);
    ck_assert_int_eq(tsq_net_load(ctx, buf, size, &back), TSQ_ERR_FORMAT);
    set_header_u32(ctx, buf, 4, TSQ_MODEL_FORMAT_VERSION);
    set_header_u32(ctx, buf, 8, 99999);
    ck_assert_int_eq(tsq_net_load(ctx, buf, size, &back), TSQ_ERR_FORMAT);
    set_header_u32(ctx, buf, 8, 3);
    ck_assert_int_eq(tsq_net_load(ctx, buf, size, &back), TSQ_ERR_FORMAT);
    free(buf);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_save_errors_and_files)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx), *back = NULL;
    uint64_t size = 0, wb = 0;
    uint8_t small[16];
    char path[] = "/tmp/tsq-model-XXXXXX";
    float y1[BATCH * 3], y2[BATCH * 3];
    int fd;
    ck_assert_int_eq(tsq_net_save(NULL, NULL, 0, &size), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_net_save(net, NULL, 0, NULL), TSQ_ERR_NULL);
    memset(small, 0xee, sizeof small);
    ck_assert_int_eq(tsq_net_save(net, small, sizeof small, &size), TSQ_ERR_TOO_SMALL);
    ck_assert_int_gt((int)size, 16);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "buffer has 16 bytes"));
    ck_assert_int_eq(small[0], 0xee); /* nothing written */
    ck_assert_int_eq(tsq_net_load(ctx, NULL, 10, &back), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_net_load(NULL, small, 10, &back), TSQ_ERR_NULL);
    ck_assert_int_eq(tsq_net_load(ctx, small, 10, NULL), TSQ_ERR_NULL);
    /* Files: save, load, compare outputs. */
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(tsq_net_save_file(net, path) == TSQ_OK, "%s", tsq_net_errmsg(net));
    ck_assert_msg(tsq_net_load_file(ctx, path, &back) == TSQ_OK, "%s", tsq_context_errmsg(ctx));
    run(ctx, net, y1);
    run(ctx, back, y2);
    ck_assert_mem_eq(y1, y2, sizeof y1);
    tsq_net_destroy(back);
    back = NULL;
    unlink(path);
    ck_assert_int_eq(tsq_net_load_file(ctx, path, &back), TSQ_ERR_IO);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), path));
    ck_assert_int_eq(tsq_net_save_file(net, "/nonexistent-dir/x.tsq"), TSQ_ERR_IO);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "nonexistent-dir"));
    /* Weight bytes: 4-bit and ternary codes are packed. */
    TH_OK(ctx, tsq_net_weight_bytes(net, &wb));
    ck_assert_uint_lt(wb, size);
    free(NULL);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

START_TEST(test_load_alloc_failures)
{
    /* Fail the k-th allocation of a load, for every k until a load
     * succeeds: each failure is NO_MEMORY and leaks nothing. */
    th_alloc_stats st0;
    tsq_context *ctx0 = th_context(&st0);
    tsq_net *net = make_net(ctx0);
    uint64_t size;
    uint8_t *buf = save(ctx0, net, &size);
    int64_t k;
    int succeeded = 0;
    tsq_net_destroy(net);
    th_context_done(ctx0, &st0);
    for (k = 1; k < 10000 && !succeeded; k++) {
        th_alloc_stats st;
        tsq_context *ctx = th_context(&st);
        tsq_net *back = NULL;
        tsq_status s;
        st.fail_at = st.total_allocs + k;
        s = tsq_net_load(ctx, buf, size, &back);
        if (s == TSQ_OK) {
            succeeded = 1;
            tsq_net_destroy(back);
        } else {
            ck_assert_msg(s == TSQ_ERR_NO_MEMORY, "k=%lld: %s (%s)", (long long)k,
                          tsq_status_string(s), tsq_context_errmsg(ctx));
            ck_assert_ptr_null(back);
        }
        th_context_done(ctx, &st);
    }
    ck_assert(succeeded);
    free(buf);
}
END_TEST

/* The container's record reader, with a sink that only looks: the head
 * and one record per layer, in order, with the layer's kind and arrays. */
typedef struct seen {
    tsq_net *net;
    int32_t heads, records;
    int64_t in_shape[3];
    int32_t in_ndim;
} seen;

static tsq_status seen_head(void *user, const tsq__model_cursor *cur, const tsq__model_head *h)
{
    seen *s = user;
    (void)cur;
    s->heads++;
    s->in_ndim = h->in_ndim;
    memcpy(s->in_shape, h->in_shape, sizeof s->in_shape);
    return TSQ_OK;
}

static tsq_status seen_record(void *user, const tsq__model_cursor *cur,
                              const tsq__layer_rec *rec)
{
    seen *s = user;
    tsq_layer *l = NULL;
    int32_t kind = -1, i;
    ck_assert_int_eq(cur->record, s->records);
    ck_assert_int_eq(cur->section, s->records + 1);
    ck_assert_int_eq(tsq_net_layer(s->net, s->records, &l), TSQ_OK);
    tsq_layer_kind(l, &kind);
    ck_assert_int_eq(rec->kind, kind);
    for (i = 0; i < rec->narrays; i++) {
        const tsq__rec_array *a = &rec->arrays[i];
        ck_assert(a->numel >= 1 && a->data != NULL && a->name[0] != '\0');
        if (a->encoding == TSQ__REC_RAW && a->dtype == TSQ_DTYPE_F32) {
            float *x = malloc((size_t)a->numel * sizeof *x);
            ck_assert_int_eq(tsq__rec_read_f32(a, x), -1); /* all finite */
            free(x);
        }
    }
    if (kind == TSQ_LAYER_ACT_QUANT) {
        int32_t bits;
        float eps, delta;
        tsq__rec_channel(rec, 0, &bits, &eps, &delta);
        ck_assert(bits >= 1 && bits <= 8 && delta > 0.0f);
    }
    s->records++;
    /* a sink's failure stops the reader and comes back as it is */
    return s->records == 100 ? tsq__model_fail(cur, "stop") : TSQ_OK;
}

START_TEST(test_generic_record_reader)
{
    th_alloc_stats st;
    tsq_context *ctx = th_context(&st);
    tsq_net *net = make_net(ctx);
    tsq__model_sink sink;
    seen s;
    uint64_t size, bytes = 0;
    uint8_t *buf = save(ctx, net, &size);
    int32_t nl = 0;
    memset(&s, 0, sizeof s);
    s.net = net;
    sink.head = seen_head;
    sink.record = seen_record;
    sink.user = &s;
    TH_OK(ctx, tsq__model_read(ctx, "reader", buf, size, &sink));
    tsq_net_layer_count(net, &nl);
    ck_assert_int_eq(s.heads, 1);
    ck_assert_int_eq(s.records, nl);
    ck_assert_int_eq(s.in_ndim, 3);
    ck_assert(s.in_shape[0] == IN_C && s.in_shape[1] == IN_H && s.in_shape[2] == IN_W);
    /* its messages carry the caller's name and the section */
    buf[size - 1] ^= 1;
    s.records = 0;
    ck_assert_int_eq(tsq__model_read(ctx, "reader", buf, size, &sink), TSQ_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tsq_context_errmsg(ctx), "reader: section"));
    buf[size - 1] ^= 1;
    /* NULL outputs of the model calls get a message on the net */
    ck_assert_int_eq(tsq_net_save(net, NULL, 0, NULL), TSQ_ERR_NULL);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "size is NULL"));
    ck_assert_int_eq(tsq_net_weight_bytes(net, NULL), TSQ_ERR_NULL);
    ck_assert_ptr_nonnull(strstr(tsq_net_errmsg(net), "bytes is NULL"));
    TH_OK(ctx, tsq_net_weight_bytes(net, &bytes));
    ck_assert(bytes > 0 && bytes < size);
    free(buf);
    tsq_net_destroy(net);
    th_context_done(ctx, &st);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model_file");
    TCase *tc = tcase_create("model_file");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_round_trip_bit_identical);
    tcase_add_test(tc, test_corrupt_byte_in_each_section);
    tcase_add_test(tc, test_every_truncation_refused);
    tcase_add_test(tc, test_versions);
    tcase_add_test(tc, test_save_errors_and_files);
    tcase_add_test(tc, test_load_alloc_failures);
    tcase_add_test(tc, test_generic_record_reader);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run(model_suite()); }
