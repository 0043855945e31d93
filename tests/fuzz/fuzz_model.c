/* libFuzzer target: the .tsq model loader, tsq_net_load (include/tsq/model.h,
 * format in docs/format.md), and what a caller does with a loaded net.
 *
 * Each input is loaded twice: as given (so the checksum checks are fuzzed)
 * and with every checksum recomputed (so mutations reach the section
 * parsers behind them). For every load it asserts:
 *  - the status is one tsq_net_load documents (OK, FORMAT, VERSION,
 *    NO_MEMORY), *out is set exactly on success, a failure leaves a message;
 *  - on success: layer kinds, names, configuration, options, shapes and
 *    tensors can be queried; the net saves; the saved bytes load again, and
 *    that second net saves to identical bytes (save(load(save(net))) ==
 *    save(net)); a clone saves to the same bytes too;
 *  - when the net is small enough to run cheaply (bounded activations and
 *    multiply-adds, see run_budget), an eval-mode forward and evaluate on a
 *    fixed input succeed; tsq_plan_create either fails with a documented
 *    status or gives a plan whose sample sizes match the net and that runs
 *    the same input (with its own and with a caller workspace);
 *  - folding batch-norms succeeds and the net still runs;
 *  - every block allocated through the context is freed (fz_context_done).
 * The context's allocator is capped (fuzz_common.h), so a hostile size ends
 * in TSQ_ERR_NO_MEMORY, never in a fuzzer out-of-memory. */
#include "fuzz_common.h"

#define MAX_RUN_ELEMS (INT64_C(1) << 18) /* activations of one layer, one sample */
#define MAX_RUN_MACS (INT64_C(1) << 23)  /* multiply-adds of one forward */

/* ---- checksum repair (the frame of docs/format.md) ----------------------- */

static void repair_checksums(uint8_t *p, uint64_t n)
{
    uint64_t pos = 16;
    if (n < 16)
        return;
    fz_put_u32(p + 12, fz_crc32(p, 12));
    while (n - pos >= 16) {
        uint64_t len = fz_get_u64(p + pos + 4);
        if (len > n - pos - 16)
            break;
        fz_put_u32(p + pos + 12 + len, fz_crc32(p + pos, 12 + len));
        pos += 16 + len;
    }
}

/* ---- saving into harness memory ------------------------------------------ */

/* Saves the net into a malloc'd buffer; NULL when the net is too large to
 * be worth it (its size is still asserted to be what the writer reports). */
static uint8_t *save(tsq_net *net, uint64_t *size)
{
    uint64_t n = 0, n2 = 0;
    uint8_t *buf;
    tsq_status st = tsq_net_save(net, NULL, 0, &n);
    FZ_REQUIRE(st == TSQ_OK, "net_save (size) of a loaded net: %s: %s",
               tsq_status_string(st), tsq_net_errmsg(net));
    FZ_REQUIRE(n >= 16, "a model of %llu bytes", (unsigned long long)n);
    if (n > (UINT64_C(64) << 20))
        return NULL;
    buf = malloc((size_t)n);
    FZ_REQUIRE(buf != NULL, "malloc");
    /* one byte short is refused and reports the size */
    st = tsq_net_save(net, buf, n - 1, &n2);
    FZ_REQUIRE(st == TSQ_ERR_TOO_SMALL && n2 == n, "net_save into a short buffer: %s",
               tsq_status_string(st));
    fz_check_msg(tsq_net_errmsg(net), 1, "net_save short");
    st = tsq_net_save(net, buf, n, &n2);
    FZ_REQUIRE(st == TSQ_OK && n2 == n, "net_save: %s: %s", tsq_status_string(st),
               tsq_net_errmsg(net));
    *size = n;
    return buf;
}

/* ---- queries on every layer ------------------------------------------------ */

static void query_layers(tsq_net *net)
{
    int32_t count = -1, i, j, n, key;
    FZ_REQUIRE(tsq_net_layer_count(net, &count) == TSQ_OK && count >= 0, "layer_count");
    FZ_REQUIRE(tsq_net_layer(net, count, NULL) != TSQ_OK, "layer past the end");
    for (i = 0; i < count; i++) {
        tsq_layer *l = NULL;
        int32_t kind = 0, in_nd = 0, out_nd = 0;
        int64_t in_shape[3], out_shape[3], v;
        double opt;
        FZ_REQUIRE(tsq_net_layer(net, i, &l) == TSQ_OK && l, "net_layer %d", (int)i);
        FZ_REQUIRE(tsq_layer_kind(l, &kind) == TSQ_OK, "layer_kind");
        FZ_REQUIRE(strcmp(tsq_layer_kind_name(kind), "unknown") != 0, "kind %d", (int)kind);
        for (key = 0; key <= 9; key++)
            (void)tsq_layer_info(l, key, &v);
        for (key = 0; key <= 8; key++)
            (void)tsq_layer_get_option(l, key, &opt);
        FZ_REQUIRE(tsq_layer_sample_shapes(l, in_shape, &in_nd, out_shape, &out_nd, 3) == TSQ_OK,
                   "sample_shapes of layer %d", (int)i);
        FZ_REQUIRE(in_nd >= 1 && in_nd <= 3 && out_nd >= 1 && out_nd <= 3, "ranks");
        if (kind == TSQ_LAYER_ACT_QUANT) {
            int64_t nch = -1, ch;
            int32_t bits = 0;
            float eps = 0, delta = 0;
            FZ_REQUIRE(tsq_layer_act_quant_get_channel(l, 0, &nch, &bits, &eps, &delta) == TSQ_OK,
                       "act_quant_get_channel");
            for (ch = 0; ch < (nch < 64 ? nch : 64) || ch == 0; ch++) {
                FZ_REQUIRE(tsq_layer_act_quant_get_channel(l, ch, NULL, &bits, &eps, &delta) ==
                               TSQ_OK, "act_quant_get_channel %lld", (long long)ch);
                FZ_REQUIRE(bits >= 1 && bits <= 8 && eps >= 0 && delta > 0,
                           "quantizer %d channel %lld: bits %d eps %g delta %g", (int)i,
                           (long long)ch, (int)bits, eps, delta);
            }
            FZ_REQUIRE(tsq_layer_act_quant_get_channel(l, nch > 0 ? nch : -2, NULL, NULL, NULL,
                                                       NULL) == TSQ_ERR_INVALID,
                       "channel past the end");
        }
        FZ_REQUIRE(tsq_layer_param_count(l, &n) == TSQ_OK, "param_count");
        for (j = 0; j < n; j++) {
            tsq_tensor *t = NULL, *g = NULL;
            const char *name = NULL;
            int64_t cnt = 0;
            FZ_REQUIRE(tsq_layer_param(l, j, &t, &g, &name) == TSQ_OK && t && name,
                       "layer_param");
            FZ_REQUIRE(tsq_tensor_numel(t, &cnt) == TSQ_OK && cnt >= 1, "numel");
        }
        FZ_REQUIRE(tsq_layer_param(l, n, NULL, NULL, NULL) == TSQ_ERR_INVALID, "param past end");
        FZ_REQUIRE(tsq_layer_state_count(l, &n) == TSQ_OK, "state_count");
        for (j = 0; j < n; j++) {
            tsq_tensor *t = NULL;
            const char *name = NULL;
            FZ_REQUIRE(tsq_layer_state(l, j, &t, &name) == TSQ_OK && t && name, "layer_state");
        }
        fz_check_msg(tsq_layer_errmsg(l), 0, "layer");
    }
}

/* ---- running -------------------------------------------------------------- */

static int64_t numel_of(const int64_t *shape, int32_t nd)
{
    int64_t n = 1;
    int32_t d;
    for (d = 0; d < nd; d++)
        n *= shape[d];
    return n;
}

/* 1 when a one-sample forward stays within MAX_RUN_ELEMS per layer and
 * MAX_RUN_MACS in all (an estimate: kernel windows times outputs). Writes
 * the input sample shape. */
static int run_budget(tsq_net *net, int64_t *in_shape, int32_t *in_nd)
{
    int32_t count = 0, i;
    int64_t macs = 0;
    tsq_net_layer_count(net, &count);
    if (count < 1)
        return 0;
    for (i = 0; i < count; i++) {
        tsq_layer *l = NULL;
        int32_t kind = 0, a_nd = 0, b_nd = 0;
        int64_t a[3], b[3], nin, nout, cin = 1, kh = 1, kw = 1;
        tsq_net_layer(net, i, &l);
        tsq_layer_kind(l, &kind);
        if (tsq_layer_sample_shapes(l, a, &a_nd, b, &b_nd, 3) != TSQ_OK)
            return 0;
        if (i == 0) {
            memcpy(in_shape, a, sizeof a);
            *in_nd = a_nd;
        }
        /* each factor is at most 2^30 (the format's bound on config values) */
        nin = numel_of(a, a_nd);
        nout = numel_of(b, b_nd);
        if (nin > MAX_RUN_ELEMS || nout > MAX_RUN_ELEMS)
            return 0;
        tsq_layer_info(l, TSQ_LAYER_INFO_IN_CHANNELS, &cin);
        tsq_layer_info(l, TSQ_LAYER_INFO_KERNEL_H, &kh);
        tsq_layer_info(l, TSQ_LAYER_INFO_KERNEL_W, &kw);
        if (kind == TSQ_LAYER_MAXPOOL2D)
            kw = kh;
        if (kind == TSQ_LAYER_DENSE || kind == TSQ_LAYER_LOWBIT_DENSE) {
            if (cin > MAX_RUN_MACS / nout)
                return 0;
            macs += cin * nout;
        } else if (kind == TSQ_LAYER_CONV2D || kind == TSQ_LAYER_LOWBIT_CONV2D) {
            if (cin > MAX_RUN_MACS || kh > MAX_RUN_MACS || kw > MAX_RUN_MACS ||
                cin * kh > MAX_RUN_MACS / kw || cin * kh * kw > MAX_RUN_MACS / nout)
                return 0;
            macs += cin * kh * kw * nout;
        } else if (kind == TSQ_LAYER_MAXPOOL2D) {
            if (kh * kw > MAX_RUN_MACS / nout)
                return 0;
            macs += kh * kw * nout;
        } else {
            macs += nin + nout;
        }
        if (macs > MAX_RUN_MACS)
            return 0;
    }
    return 1;
}

/* A fixed, finite input: a few distinct magnitudes and signs. */
static tsq_tensor *make_input(tsq_context *ctx, const int64_t *sample, int32_t nd)
{
    int64_t shape[4], n, i;
    tsq_tensor *x = NULL;
    float *p = NULL;
    shape[0] = 1;
    memcpy(shape + 1, sample, (size_t)nd * sizeof *sample);
    if (tsq_tensor_create(ctx, TSQ_DTYPE_F32, nd + 1, shape, &x) != TSQ_OK)
        return NULL;
    tsq_tensor_data(x, (void **)&p);
    tsq_tensor_numel(x, &n);
    for (i = 0; i < n; i++)
        p[i] = (float)((i * 37) % 11) * 0.25f - 1.0f;
    return x;
}

static tsq_tensor *make_output(tsq_context *ctx, tsq_net *net)
{
    int64_t shape[4] = {1, 0, 0, 0};
    int32_t nd = 0;
    tsq_tensor *y = NULL;
    FZ_REQUIRE(tsq_net_output_shape(net, shape + 1, 3, &nd) == TSQ_OK, "output_shape");
    if (tsq_tensor_create(ctx, TSQ_DTYPE_F32, nd + 1, shape, &y) != TSQ_OK)
        return NULL;
    return y;
}

static void forward(tsq_net *net, tsq_tensor *x, tsq_tensor *y)
{
    tsq_status st = tsq_net_forward(net, x, y, 0);
    FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "forward: %s: %s",
               tsq_status_string(st), tsq_net_errmsg(net));
}

static void run_plan(tsq_context *ctx, tsq_net *net, tsq_tensor *x, tsq_tensor *y)
{
    tsq_plan *plan = NULL;
    int64_t in_size = 0, out_size = 0, xn = 0, yn = 0, v;
    uint64_t ws = 0;
    int32_t key;
    tsq_status st = tsq_plan_create(ctx, net, &plan);
    if (st != TSQ_OK) {
        FZ_REQUIRE(plan == NULL, "plan set on failure");
        FZ_REQUIRE(st == TSQ_ERR_STATE || st == TSQ_ERR_UNSUPPORTED || st == TSQ_ERR_OVERFLOW ||
                       st == TSQ_ERR_NO_MEMORY || st == TSQ_ERR_NOT_FINITE ||
                       st == TSQ_ERR_INVALID,
                   "plan_create: %s: %s", tsq_status_string(st), tsq_context_errmsg(ctx));
        fz_check_msg(tsq_context_errmsg(ctx), 1, "plan_create");
        return;
    }
    for (key = TSQ_PLAN_LOWBIT_LAYERS - 1; key <= TSQ_PLAN_STAGES + 1; key++)
        (void)tsq_plan_get(plan, key, &v);
    tsq_plan_get(plan, TSQ_PLAN_INPUT_SIZE, &in_size);
    tsq_plan_get(plan, TSQ_PLAN_OUTPUT_SIZE, &out_size);
    tsq_tensor_numel(x, &xn);
    tsq_tensor_numel(y, &yn);
    FZ_REQUIRE(in_size == xn && out_size == yn, "plan sizes %lld/%lld, net %lld/%lld",
               (long long)in_size, (long long)out_size, (long long)xn, (long long)yn);
    st = tsq_plan_run(ctx, plan, x, y, NULL, 0);
    FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "plan_run: %s: %s",
               tsq_status_string(st), tsq_context_errmsg(ctx));
    st = tsq_plan_workspace_size(ctx, plan, 1, &ws);
    FZ_REQUIRE(st == TSQ_OK, "plan_workspace_size: %s", tsq_status_string(st));
    if (ws <= (UINT64_C(16) << 20)) {
        void *w = malloc((size_t)ws + 1);
        FZ_REQUIRE(w != NULL, "malloc");
        st = tsq_plan_run(ctx, plan, x, y, (uint8_t *)w + 1, ws); /* unaligned on purpose */
        FZ_REQUIRE(st == TSQ_OK, "plan_run with workspace: %s: %s", tsq_status_string(st),
                   tsq_context_errmsg(ctx));
        if (ws > 0) {
            st = tsq_plan_run(ctx, plan, x, y, w, ws - 1);
            FZ_REQUIRE(st == TSQ_ERR_TOO_SMALL, "short workspace: %s", tsq_status_string(st));
        }
        free(w);
    }
    tsq_plan_destroy(plan);
}

static void run_net(tsq_context *ctx, tsq_net *net)
{
    int64_t in_shape[3];
    int32_t in_nd = 0, out_nd = 0, pred = -1, label = 0, folded = -1;
    int64_t out_shape[3];
    tsq_tensor *x, *y;
    tsq_status st;
    if (!run_budget(net, in_shape, &in_nd))
        return;
    x = make_input(ctx, in_shape, in_nd);
    y = x ? make_output(ctx, net) : NULL;
    if (x && y) {
        forward(net, x, y);
        tsq_net_output_shape(net, out_shape, 3, &out_nd);
        if (out_nd == 1) {
            double loss = 0;
            int64_t correct = -1;
            st = tsq_net_evaluate(net, x, &label, 1, &loss, &correct, &pred);
            FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NOT_FINITE || st == TSQ_ERR_NO_MEMORY,
                       "evaluate: %s: %s", tsq_status_string(st), tsq_net_errmsg(net));
            if (st == TSQ_OK)
                FZ_REQUIRE(pred >= 0 && pred < out_shape[0] && (correct == 0 || correct == 1),
                           "prediction %d of %lld", (int)pred, (long long)out_shape[0]);
        }
        run_plan(ctx, net, x, y);
        /* folding changes the net (not its shapes): it must still run */
        st = tsq_net_fold_batchnorm(net, &folded);
        FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "fold_batchnorm: %s",
                   tsq_status_string(st));
        forward(net, x, y);
    }
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
}

/* ---- one input ------------------------------------------------------------- */

static void load_one(const uint8_t *data, size_t size)
{
    fz_heap heap;
    tsq_context *ctx = fz_context(&heap);
    tsq_net *net = (tsq_net *)&heap, *net2 = NULL, *copy = NULL; /* non-NULL: must be reset */
    uint8_t *a = NULL, *b = NULL, *c = NULL;
    uint64_t na = 0, nb = 0, nc = 0, wbytes = 0;
    tsq_status st = tsq_net_load(ctx, data, size, &net);
    if (st != TSQ_OK) {
        FZ_REQUIRE(net == NULL, "out not cleared on failure");
        FZ_REQUIRE(st == TSQ_ERR_FORMAT || st == TSQ_ERR_VERSION || st == TSQ_ERR_NO_MEMORY,
                   "net_load: undocumented status %s: %s", tsq_status_string(st),
                   tsq_context_errmsg(ctx));
        fz_check_msg(tsq_context_errmsg(ctx), 1, "net_load");
        fz_context_done(ctx, &heap);
        return;
    }
    FZ_REQUIRE(net != NULL, "net_load OK without a net");
    fz_check_msg(tsq_context_errmsg(ctx), 0, "context");
    query_layers(net);
    FZ_REQUIRE(tsq_net_weight_bytes(net, &wbytes) == TSQ_OK, "weight_bytes");

    /* save(load(save(net))) == save(net) */
    a = save(net, &na);
    if (a) {
        st = tsq_net_load(ctx, a, na, &net2);
        FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY,
                   "a saved net does not load: %s: %s", tsq_status_string(st),
                   tsq_context_errmsg(ctx));
        if (st == TSQ_OK) {
            b = save(net2, &nb);
            FZ_REQUIRE(b && nb == na && memcmp(a, b, (size_t)na) == 0,
                       "re-saving a loaded model changes it (%llu vs %llu bytes)",
                       (unsigned long long)na, (unsigned long long)nb);
        }
        st = tsq_net_clone(net, &copy);
        FZ_REQUIRE(st == TSQ_OK || st == TSQ_ERR_NO_MEMORY, "clone: %s", tsq_status_string(st));
        if (st == TSQ_OK) {
            c = save(copy, &nc);
            FZ_REQUIRE(c && nc == na && memcmp(a, c, (size_t)na) == 0,
                       "a clone saves differently");
        }
    }
    free(a);
    free(b);
    free(c);
    tsq_net_destroy(net2);
    tsq_net_destroy(copy);

    run_net(ctx, net);
    fz_check_msg(tsq_net_errmsg(net), 0, "net");
    tsq_net_destroy(net);
    fz_context_done(ctx, &heap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *fixed;
    load_one(data, size);
    if (size < 16 || size > (1u << 20))
        return 0;
    fixed = malloc(size);
    if (!fixed)
        return 0;
    memcpy(fixed, data, size);
    repair_checksums(fixed, size);
    if (memcmp(fixed, data, size) != 0)
        load_one(fixed, size);
    free(fixed);
    return 0;
}
