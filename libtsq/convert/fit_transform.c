/*
 * Step 2 of TSQ on a network (docs/method.md §3): tsq_net_fit_transform,
 * layer by layer ("units"), each fitted by the net's tsq_regressor over as
 * many passes as it asks for. For unit u (weight layer L, maybe a
 * batch-norm B after it, maybe a quantizer Q after that), on every batch:
 *     X = input of L in the net being converted (codes: the quantizer
 *         feeding L is switched to codes output when the unit starts),
 *     P = output of B (or L) in the reference net (a clone of the net as
 *         the session began: the step-1 network), Y = Q's codes of P,
 * as rows (im2col rows for a convolution). The start W_init is L's weights
 * with B folded in (s = gamma / sqrt(var + eps)) and multiplied by the input
 * quantizer's delta per input channel, since the step-1 layer saw k * delta
 * where the low-bit layer sees k:
 *     P = s (W (k delta) + b - mean) + beta = (s W delta) k + b'.
 * When the regressor is done, L is replaced by a low-bit layer holding
 * (w, alpha, b) and B is removed: y = alpha (k . w) + b approximates P.
 *
 * The regressor asks for several passes over the same batches, and making
 * a batch's rows means running both nets up to the unit: the unit's rows
 * of each batch are kept (with a copy of the batch, up to
 * TSQ_NET_TSQ_KEEP_ROWS_MIB in all) and fed again when the same batch
 * comes back at the same place in a later pass. The nets run in eval mode, so skipping them changes
 * nothing; a batch that differs from the kept one gets new rows.
 */
#include "convert_internal.h"

#include "quant/quant_internal.h"

#include <stdlib.h>
#include <string.h>

typedef tsq__cvt_unit fit_unit;

/* What keeping a batch of n samples and its rows costs against the budget. */
static int64_t kept_bytes(const tsq_net *net, int64_t n, const tsq_tensor *X,
                          const tsq_tensor *P, const tsq_tensor *Y)
{
    return n * net->in_numel * (int64_t)sizeof(float) +
           (int64_t)(tsq__tensor_bytes(X) + tsq__tensor_bytes(P) + tsq__tensor_bytes(Y));
}

static void drop_rows(tsq_net *net, tsq__conversion *c, tsq__cvt_rows *r)
{
    c->rows_bytes -= kept_bytes(net, r->n, r->X, r->P, r->Y);
    tsq__free(net->obj.ctx, r->x);
    tsq_tensor_destroy(r->X);
    tsq_tensor_destroy(r->P);
    tsq_tensor_destroy(r->Y);
    memset(r, 0, sizeof *r);
}

void tsq__cvt_free_rows(tsq_net *net, tsq__conversion *c)
{
    int64_t i;
    for (i = 0; i < c->nrows; i++)
        if (c->rows[i].x)
            drop_rows(net, c, &c->rows[i]);
    tsq__free(net->obj.ctx, c->rows);
    c->rows = NULL;
    c->nrows = c->rows_bytes = 0;
}

/* The kept rows of this batch at this place in the pass, or NULL. */
static const tsq__cvt_rows *kept_rows(const tsq_net *net, const tsq__conversion *c,
                                      const tsq_tensor *x, int64_t n)
{
    const tsq__cvt_rows *r;
    if (c->batch_in_pass >= c->nrows)
        return NULL;
    r = &c->rows[c->batch_in_pass];
    if (!r->x || r->n != n ||
        memcmp(r->x, x->data, (size_t)(n * net->in_numel) * sizeof(float)) != 0)
        return NULL;
    return r;
}

/* t itself when it owns its memory, else an owned copy (NULL: no memory). */
static tsq_tensor *owned(tsq_net *net, tsq_tensor *t)
{
    tsq_tensor *copy = NULL;
    if (!t || t->owns_data)
        return t;
    tsq__tensor_dup(net->obj.ctx, t, &copy);
    return copy;
}

/* Keeps the rows of x for the later passes when they fit the budget: the
 * slot then owns them and *X, *P, *Y are set to NULL. Over the budget the
 * caller keeps them. Out of memory: TSQ_ERR_NO_MEMORY, the caller keeps
 * them and nothing is kept (a retry makes the rows again). */
static tsq_status keep_rows(tsq_net *net, const char *where, tsq__conversion *c,
                            const tsq_tensor *x, int64_t n, tsq_tensor **X, tsq_tensor **P,
                            tsq_tensor **Y)
{
    tsq_context *ctx = net->obj.ctx;
    int64_t xb = n * net->in_numel * (int64_t)sizeof(float), b = c->batch_in_pass;
    int64_t bytes = kept_bytes(net, n, *X, *P, *Y);
    tsq__cvt_rows *r;
    tsq_tensor *ox, *op;
    if (b < c->nrows && c->rows[b].x)
        drop_rows(net, c, &c->rows[b]);
    if (c->rows_bytes + bytes > (c->keep_rows_mib << 20)) /* TSQ_NET_TSQ_KEEP_ROWS_MIB */
        return TSQ_OK;
    if (b >= c->nrows) {
        int64_t cap = c->nrows ? 2 * c->nrows : 16;
        tsq__cvt_rows *grown;
        if (cap <= b)
            cap = b + 1;
        grown = tsq__calloc(ctx, (size_t)cap, sizeof *grown);
        if (!grown)
            return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
        if (c->nrows)
            memcpy(grown, c->rows, (size_t)c->nrows * sizeof *grown);
        tsq__free(ctx, c->rows);
        c->rows = grown;
        c->nrows = cap;
    }
    r = &c->rows[b];
    r->x = tsq__alloc(ctx, (size_t)xb);
    ox = owned(net, *X);
    op = owned(net, *P);
    if (!r->x || !ox || !op) {
        tsq__free(ctx, r->x);
        r->x = NULL;
        if (ox != *X)
            tsq_tensor_destroy(ox);
        if (op != *P)
            tsq_tensor_destroy(op);
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    memcpy(r->x, x->data, (size_t)xb);
    r->n = n;
    if (ox != *X)
        tsq_tensor_destroy(*X);
    if (op != *P)
        tsq_tensor_destroy(*P);
    r->X = ox;
    r->P = op;
    r->Y = *Y;
    *X = *P = *Y = NULL;
    c->rows_bytes += bytes;
    return TSQ_OK;
}

void tsq__cvt_free_units(tsq_net *net, tsq__conversion *c)
{
    int32_t u, k;
    for (u = 0; u < c->nunits; u++)
        for (k = 0; k < TSQ__CVT_HIST_SERIES; k++)
            tsq__free(net->obj.ctx, c->units[u].history[k]);
    tsq__free(net->obj.ctx, c->units);
    c->units = NULL;
    c->nunits = c->cur = 0;
}

static tsq_status begin_fitting(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__conversion *s;
    int32_t i, first = -1, lastw = -1, n = 0;
    tsq_status st;
    for (i = 0; i < net->nlayers; i++)
        if (tsq__cvt_is_weight(net->layers[i])) {
            if (first < 0)
                first = i;
            lastw = i;
        }
    st = tsq__cvt_new_session(net, TSQ_NET_TSQ_FITTING);
    if (st != TSQ_OK)
        return st;
    s = tsq__cvt_of(net);
    if ((st = tsq__cvt_regressor(net, s)) != TSQ_OK) {
        tsq__cvt_end_session(net);
        return st;
    }
    for (i = 0; i < net->nlayers; i++) {
        const tsq_layer *l = net->layers[i];
        int sel = l->tsq_select;
        if (!tsq__layer_is(l, TSQ_LAYER_DENSE) && !tsq__layer_is(l, TSQ_LAYER_CONV2D))
            continue;
        if (sel == 1 || (sel == -1 && i != first && i != lastw))
            n++;
    }
    if (n == 0) {
        tsq__cvt_end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_STATE,
                         "%s: no dense or conv2d layer is selected for conversion (by default "
                         "the first and the last stay in full precision)", where);
    }
    s->units = tsq__calloc(ctx, (size_t)n, sizeof *s->units);
    if (!s->units) {
        tsq__cvt_end_session(net);
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    for (i = 0; i < net->nlayers; i++) {
        const tsq_layer *l = net->layers[i];
        fit_unit *u;
        int32_t next, q;
        if ((!tsq__layer_is(l, TSQ_LAYER_DENSE) && !tsq__layer_is(l, TSQ_LAYER_CONV2D)) ||
            !(l->tsq_select == 1 || (l->tsq_select == -1 && i != first && i != lastw)))
            continue;
        u = &s->units[s->nunits++];
        u->ref_layer = i;
        u->weight_ord = tsq__cvt_ordinal_of(net, tsq__cvt_is_weight, i);
        next = i + 1;
        u->ref_bn = -1;
        if (next < net->nlayers && tsq__layer_is(net->layers[next], TSQ_LAYER_BATCHNORM))
            u->ref_bn = next++;
        u->ref_out_quant = next < net->nlayers && tsq__cvt_is_quant(net->layers[next]) ? next : -1;
        q = tsq__cvt_feeding_quantizer(net, i);
        u->in_quant_ord = q >= 0 ? tsq__cvt_ordinal_of(net, tsq__cvt_is_quant, q) : -1;
    }
    st = tsq_net_clone(net, &s->ref);
    if (st != TSQ_OK) {
        tsq__cvt_end_session(net);
        return st;
    }
    return TSQ_OK;
}

/* Per-input-column delta of the quantizer feeding a unit's layer (1 when
 * no quantizer feeds it: the regressor then sees the float input). */
static float column_delta(const tsq_layer *q, const tsq_layer *l, int64_t col)
{
    int32_t bits;
    float eps, delta;
    int64_t c = 0, nch;
    if (!q)
        return 1.0f;
    nch = tsq__act_quant_nchannels(q);
    if (nch > 0) {
        if (tsq__layer_is(l, TSQ_LAYER_CONV2D)) {
            const tsq__conv_geom *g = tsq__conv2d_geom(l);
            c = col / (g->kh * g->kw);
        } else {
            c = col / (l->in_numel / nch);
        }
    }
    tsq__act_quant_channel(q, c, &bits, &eps, &delta);
    return delta;
}

/* W_init (d x C): the weights with the batch-norm folded in, in code units. */
static tsq_status initial_weights(tsq_net *net, const char *where, const fit_unit *u,
                                  int64_t d, int64_t C, tsq_tensor **out)
{
    tsq_context *ctx = net->obj.ctx;
    tsq_net *ref = tsq__cvt_of(net)->ref;
    const tsq_layer *l = ref->layers[u->ref_layer];
    const tsq_layer *q = NULL;
    const float *w = tsq__param_data(l, 0);
    int64_t shape[2] = {d, C}, c, j;
    float *s, *W;
    tsq_status st;
    if (u->in_quant_ord >= 0)
        q = ref->layers[tsq__cvt_find_ordinal(ref, tsq__cvt_is_quant, u->in_quant_ord)];
    st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 2, shape, out);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    s = tsq__alloc(ctx, (size_t)(2 * C) * sizeof(float));
    if (!s) {
        tsq_tensor_destroy(*out);
        *out = NULL;
        return tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
    }
    if (u->ref_bn >= 0) {
        tsq__batchnorm_eval_affine(ref->layers[u->ref_bn], s, s + C);
    } else {
        for (c = 0; c < C; c++)
            s[c] = 1.0f;
    }
    W = (*out)->data;
    for (j = 0; j < d; j++) {
        float dj = column_delta(q, l, j);
        for (c = 0; c < C; c++)
            W[j * C + c] = s[c] * w[c * d + j] * dj;
    }
    tsq__free(ctx, s);
    return TSQ_OK;
}

/* Gives the regressor the unit's output quantizer (or the linear loss). */
static tsq_status set_output_quantizer(tsq_net *net, const char *where, const fit_unit *u,
                                       int64_t C)
{
    tsq_context *ctx = net->obj.ctx;
    tsq_regressor *reg = tsq__cvt_of(net)->reg;
    const tsq_layer *q;
    int32_t bits, b;
    float eps, delta;
    int64_t nch, c;
    tsq_quantizer *tq = NULL;
    tsq_status st;
    double loss;
    if (u->ref_out_quant < 0) {
        tsq_regressor_get_option(reg, TSQ_REGRESSOR_LOSS, &loss);
        tsq__cvt_of(net)->restore_loss = (int)loss;
        st = tsq_regressor_set_option(reg, TSQ_REGRESSOR_LOSS, TSQ_LOSS_LINEAR);
        return st == TSQ_OK ? st : tsq__fail(&net->obj, st, "%s: %s", where, tsq_regressor_errmsg(reg));
    }
    q = tsq__cvt_of(net)->ref->layers[u->ref_out_quant];
    nch = tsq__act_quant_nchannels(q);
    tsq__act_quant_channel(q, 0, &bits, &eps, &delta);
    if (nch == 0) {
        st = tsq_regressor_set_levels(reg, bits, eps, delta);
        return st == TSQ_OK ? st : tsq__fail(&net->obj, st, "%s: %s", where, tsq_regressor_errmsg(reg));
    }
    if (nch != C)
        return tsq__fail(&net->obj, TSQ_ERR_SHAPE, "%s: a quantizer of %lld channels after %lld",
                         where, (long long)nch, (long long)C);
    st = tsq_quantizer_create(ctx, bits, nch, &tq);
    for (c = 0; st == TSQ_OK && c < nch; c++) {
        tsq__act_quant_channel(q, c, &b, &eps, &delta);
        if (b != bits) {
            tsq_quantizer_destroy(tq);
            return tsq__fail(&net->obj, TSQ_ERR_UNSUPPORTED,
                             "%s: the quantizer at layer %d mixes %d- and %d-bit channels", where,
                             (int)u->ref_out_quant, (int)bits, (int)b);
        }
        st = tsq_quantizer_set_channel(tq, c, eps, delta);
    }
    if (st == TSQ_OK)
        st = tsq_regressor_set_quantizer(reg, tq);
    if (st != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: output quantizer: %s", where,
                  tq ? tsq_regressor_errmsg(reg) : tsq_context_errmsg(ctx));
    tsq_quantizer_destroy(tq);
    return st;
}

static void layer_dims(const tsq_layer *l, int64_t *d, int64_t *C)
{
    if (tsq__layer_is(l, TSQ_LAYER_CONV2D)) {
        const tsq__conv_geom *g = tsq__conv2d_geom(l);
        *d = g->k;
        *C = g->cout;
    } else {
        *d = l->in_numel;
        *C = l->out_numel;
    }
}

static tsq_status start_unit(tsq_net *net, const char *where)
{
    tsq__conversion *s = tsq__cvt_of(net);
    fit_unit *u = &s->units[s->cur];
    const tsq_layer *l = s->ref->layers[u->ref_layer];
    tsq_tensor *W = NULL;
    int64_t d, C;
    tsq_status st;
    layer_dims(l, &d, &C);
    tsq__cvt_free_rows(net, s); /* the previous unit's */
    if (s->restore_loss) {
        tsq_regressor_set_option(tsq__cvt_of(net)->reg, TSQ_REGRESSOR_LOSS, s->restore_loss);
        s->restore_loss = 0;
    }
    st = set_output_quantizer(net, where, u, C);
    if (st == TSQ_OK)
        st = initial_weights(net, where, u, d, C, &W);
    if (st == TSQ_OK && (st = tsq_regressor_begin(tsq__cvt_of(net)->reg, d, C, W, 1)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)u->ref_layer,
                  tsq_regressor_errmsg(tsq__cvt_of(net)->reg));
    tsq_tensor_destroy(W);
    if (st == TSQ_OK && u->in_quant_ord >= 0) {
        /* From now on the layer's input is codes. */
        tsq_layer *q = net->layers[tsq__cvt_find_ordinal(net, tsq__cvt_is_quant, u->in_quant_ord)];
        tsq_layer_set_option(q, TSQ_LAYER_OPT_AQ_OUTPUT_CODES, 1);
    }
    s->batch_in_pass = 0;
    return st;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* npos distinct positions out of total for each of n images; the same for
 * the same (seed, unit, batch index), so every pass sees the same rows. */
static void sample_positions(const tsq__conversion *s, int64_t n, int64_t total, int64_t npos,
                             int64_t *pos, int64_t *perm)
{
    tsq__rng rng;
    int64_t i, k;
    tsq__rng_seed(&rng, s->seed, ((uint64_t)s->cur << 40) + (uint64_t)s->batch_in_pass);
    for (i = 0; i < n; i++) {
        for (k = 0; k < total; k++)
            perm[k] = k;
        for (k = 0; k < npos; k++) {
            int64_t j = k + (int64_t)tsq__rng_below(&rng, (uint64_t)(total - k)), t = perm[k];
            perm[k] = perm[j];
            perm[j] = t;
        }
        memcpy(pos + i * npos, perm, (size_t)npos * sizeof(int64_t));
        qsort(pos + i * npos, (size_t)npos, sizeof(int64_t), cmp_i64);
    }
}

/* The layer input as u8 codes (exact: the values are integer codes). */
static tsq_status codes_tensor(tsq_net *net, const char *where, const float *a, int64_t n,
                               const tsq_layer *l, tsq_tensor **out)
{
    tsq_context *ctx = net->obj.ctx;
    int64_t shape[4], i, numel = n * l->in_numel;
    int32_t k;
    uint8_t *c;
    tsq_status st;
    shape[0] = n;
    for (k = 0; k < l->in_ndim; k++)
        shape[k + 1] = l->in_shape[k];
    st = tsq_tensor_create(ctx, TSQ_DTYPE_U8, l->in_ndim + 1, shape, out);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    c = (*out)->data;
    for (i = 0; i < numel; i++)
        c[i] = (uint8_t)a[i];
    return TSQ_OK;
}

/* Y rows: the reference quantizer's codes of the P rows (rows x C). */
static tsq_status y_rows(tsq_net *net, const char *where, const fit_unit *u, const tsq_tensor *P,
                         tsq_tensor **out)
{
    tsq_context *ctx = net->obj.ctx;
    const tsq_layer *q = tsq__cvt_of(net)->ref->layers[u->ref_out_quant];
    int64_t rows = P->shape[0], C = P->shape[1], r, c;
    const float *p = P->data;
    uint8_t *y;
    tsq_status st = tsq_tensor_create(ctx, TSQ_DTYPE_U8, 2, P->shape, out);
    if (st != TSQ_OK)
        return tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    y = (*out)->data;
    for (c = 0; c < C; c++) {
        int32_t bits;
        float eps, delta, inv;
        tsq__act_quant_channel(q, c, &bits, &eps, &delta);
        inv = 1.0f / delta;
        for (r = 0; r < rows; r++)
            y[r * C + c] = (uint8_t)tsq__quant_code(p[r * C + c], eps, inv, (1 << bits) - 1);
    }
    return TSQ_OK;
}

/* X, P and Y rows of one batch for the current unit. */
static tsq_status unit_rows(tsq_net *net, const char *where, const tsq_tensor *x, int64_t n,
                            tsq_tensor **X, tsq_tensor **P, tsq_tensor **Y)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__conversion *s = tsq__cvt_of(net);
    const fit_unit *u = &s->units[s->cur];
    tsq_net *ref = s->ref;
    const tsq_layer *rl = ref->layers[u->ref_layer];
    int32_t li = tsq__cvt_find_ordinal(net, tsq__cvt_is_weight, u->weight_ord);
    int32_t pidx = u->ref_bn >= 0 ? u->ref_bn : u->ref_layer;
    const tsq_layer *pl = ref->layers[pidx];
    tsq_tensor *in = NULL, *pt = NULL;
    int64_t *positions = NULL, *perm = NULL, npos = s->positions;
    int conv = tsq__layer_is(rl, TSQ_LAYER_CONV2D);
    tsq_status st;
    *X = *P = *Y = NULL;
    st = tsq__cvt_run_prefix(net, net, where, x, n, li);
    if (st == TSQ_OK)
        st = tsq__cvt_run_prefix(ref, net, where, x, n, pidx + 1);
    if (st != TSQ_OK)
        return st;
    if (u->in_quant_ord >= 0)
        st = codes_tensor(net, where, net->act[li], n, rl, &in);
    else
        st = tsq__cvt_wrap_batch(net, where, net->act[li], n, rl->in_ndim, rl->in_shape, &in);
    if (st == TSQ_OK)
        st = tsq__cvt_wrap_batch(net, where, ref->act[pidx + 1], n, pl->out_ndim, pl->out_shape, &pt);
    if (st == TSQ_OK && conv) {
        const tsq__conv_geom *g = tsq__conv2d_geom(rl);
        if (npos <= 0 || npos >= g->ohw) {
            npos = 0;
        } else {
            positions = tsq__alloc(ctx, (size_t)(n * npos) * sizeof(int64_t));
            perm = tsq__alloc(ctx, (size_t)g->ohw * sizeof(int64_t));
            if (!positions || !perm)
                st = tsq__fail(&net->obj, TSQ_ERR_NO_MEMORY, "%s: out of memory", where);
            else
                sample_positions(s, n, g->ohw, npos, positions, perm);
        }
        if (st == TSQ_OK)
            st = tsq_regressor_im2col_rows(ctx, in, (int32_t)g->kh, (int32_t)g->kw,
                                           (int32_t)g->stride, (int32_t)g->stride,
                                           (int32_t)g->pad, (int32_t)g->pad, positions, npos, X);
        if (st == TSQ_OK)
            st = tsq_regressor_im2col_output_rows(ctx, pt, positions, npos, P);
        if (st != TSQ_OK)
            tsq__fail(&net->obj, st, "%s: rows: %s", where, tsq_context_errmsg(ctx));
    } else if (st == TSQ_OK) {
        /* Dense: the batch itself, seen as N x d and N x C. */
        int64_t xs[2] = {n, rl->in_numel}, ps[2] = {n, rl->out_numel};
        st = tsq_tensor_reshape(in, 2, xs);
        if (st == TSQ_OK)
            st = tsq_tensor_reshape(pt, 2, ps);
        if (st == TSQ_OK) {
            *X = in;
            *P = pt;
            in = pt = NULL;
        }
    }
    if (st == TSQ_OK && u->ref_out_quant >= 0)
        st = y_rows(net, where, u, *P, Y);
    tsq__free(ctx, positions);
    tsq__free(ctx, perm);
    tsq_tensor_destroy(in);
    tsq_tensor_destroy(pt);
    if (st != TSQ_OK) {
        tsq_tensor_destroy(*X);
        tsq_tensor_destroy(*P);
        tsq_tensor_destroy(*Y);
        *X = *P = *Y = NULL;
    }
    return st;
}

static int32_t regressor_weight_bits(tsq_regressor *reg)
{
    double v = 2;
    int32_t values[256], count = 0, i, m = 1, bits = 2;
    tsq_regressor_get_option(reg, TSQ_REGRESSOR_WEIGHT_BITS, &v);
    if (v >= 2)
        return (int32_t)v;
    if (tsq_regressor_get_alphabet(reg, values, 256, &count) == TSQ_OK)
        for (i = 0; i < count; i++)
            m = abs(values[i]) > m ? abs(values[i]) : m;
    while (bits < 8 && (1 << (bits - 1)) - 1 < m)
        bits++;
    return bits;
}

static tsq_status keep_history(tsq_net *net, fit_unit *u)
{
    int32_t k, n = 0;
    tsq_regressor_history(tsq__cvt_of(net)->reg, TSQ_HISTORY_OBJECTIVE, NULL, 0, &n);
    for (k = 0; k < TSQ__CVT_HIST_SERIES; k++) {
        u->history[k] = tsq__alloc(net->obj.ctx, (size_t)(n > 0 ? n : 1) * sizeof(double));
        if (!u->history[k])
            return TSQ_ERR_NO_MEMORY;
        if (n > 0)
            tsq_regressor_history(tsq__cvt_of(net)->reg, TSQ_HISTORY_OBJECTIVE + k, u->history[k], n, &n);
    }
    u->nhistory = n;
    return TSQ_OK;
}

/* TSQ_NET_TSQ_SHADOW_CLIP = h > 0: the shadow weights start at the step-1
 * weights in the layer's units (W_init: y = alpha (k . w) + b approximates
 * k . W_init + const), clipped into [alpha (w - h), alpha (w + h)] so that
 * rint(S / alpha) is still w. w is W_out's d x C; S is (C, d). */
static tsq_status shadow_from_step1(tsq_net *net, const char *where, const fit_unit *u,
                                    tsq_layer *nl, int64_t d, int64_t C, const int8_t *w,
                                    const float *alpha)
{
    float h = (float)tsq__cvt_of(net)->shadow_clip, *S = tsq__param_data(nl, 0);
    tsq_tensor *Wi = NULL;
    const float *v;
    int64_t c, j;
    tsq_status st;
    if (h <= 0)
        return TSQ_OK;
    if ((st = initial_weights(net, where, u, d, C, &Wi)) != TSQ_OK)
        return st;
    v = Wi->data;
    for (c = 0; c < C; c++)
        for (j = 0; j < d; j++) {
            float lo = alpha[c] * ((float)w[j * C + c] - h);
            float hi = alpha[c] * ((float)w[j * C + c] + h), x = v[j * C + c];
            S[c * d + j] = x < lo ? lo : x > hi ? hi : x;
        }
    tsq_tensor_destroy(Wi);
    return TSQ_OK;
}

/* The regressor is done: the unit's layer becomes a low-bit layer. */
static tsq_status finish_unit(tsq_net *net, const char *where)
{
    tsq_context *ctx = net->obj.ctx;
    tsq__conversion *s = tsq__cvt_of(net);
    fit_unit *u = &s->units[s->cur];
    const tsq_layer *rl = s->ref->layers[u->ref_layer];
    int32_t li = tsq__cvt_find_ordinal(net, tsq__cvt_is_weight, u->weight_ord), bits;
    int64_t d, C, wshape[2], cshape[2], vshape[1], c, j;
    tsq_tensor *W = NULL, *codes = NULL, *alpha = NULL, *b = NULL;
    tsq_layer *nl = NULL;
    tsq_status st;
    double objective = 0;
    layer_dims(rl, &d, &C);
    wshape[0] = d;
    wshape[1] = C;
    cshape[0] = C;
    cshape[1] = d;
    vshape[0] = C;
    bits = regressor_weight_bits(tsq__cvt_of(net)->reg);
    st = tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, wshape, &W);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_I8, 2, cshape, &codes);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vshape, &alpha);
    if (st == TSQ_OK)
        st = tsq_tensor_create(ctx, TSQ_DTYPE_F32, 1, vshape, &b);
    if (st != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    if (st == TSQ_OK &&
        (st = tsq_regressor_result(tsq__cvt_of(net)->reg, W, alpha, b, &objective)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_regressor_errmsg(tsq__cvt_of(net)->reg));
    if (st == TSQ_OK) {
        const int8_t *w = W->data;
        int8_t *cd = codes->data;
        for (c = 0; c < C; c++)
            for (j = 0; j < d; j++)
                cd[c * d + j] = w[j * C + c];
        if (tsq__layer_is(rl, TSQ_LAYER_CONV2D)) {
            const tsq__conv_geom *g = tsq__conv2d_geom(rl);
            st = tsq_layer_lowbit_conv2d_create(ctx, g->cin, g->cout, g->kh, g->kw, g->stride,
                                                g->pad, bits, &nl);
        } else {
            st = tsq_layer_lowbit_dense_create(ctx, d, C, bits, &nl);
        }
        if (st != TSQ_OK)
            tsq__fail(&net->obj, st, "%s: %s", where, tsq_context_errmsg(ctx));
    }
    if (st == TSQ_OK && (st = tsq__lowbit_shape_codes(nl, codes)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_tensor_errmsg(codes));
    if (st == TSQ_OK && (st = tsq_layer_lowbit_set(nl, codes, alpha, b)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: %s", where, tsq_layer_errmsg(nl));
    if (st == TSQ_OK)
        st = shadow_from_step1(net, where, u, nl, d, C, W->data, alpha->data);
    if (st == TSQ_OK && (st = keep_history(net, u)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: out of memory for the regressor history", where);
    if (st == TSQ_OK) {
        nl->trainable = net->layers[li]->trainable;
        st = tsq__net_replace(net, where, li, nl);
    }
    if (st == TSQ_OK) {
        nl = NULL;
        if (u->ref_bn >= 0)
            st = tsq__net_remove(net, li + 1);
    }
    tsq_layer_destroy(nl);
    tsq_tensor_destroy(W);
    tsq_tensor_destroy(codes);
    tsq_tensor_destroy(alpha);
    tsq_tensor_destroy(b);
    s->generation = net->generation; /* our own change */
    if (st == TSQ_OK) {
        u->finished = 1;
        tsq__log(ctx, 3 /* info */, "%s: layer %d (%s, d = %lld, C = %lld) converted to %d-bit "
                 "weights, objective %g (unit %d of %d)", where, (int)li,
                 tsq__layer_is(rl, TSQ_LAYER_CONV2D) ? "conv2d" : "dense", (long long)d,
                 (long long)C, (int)bits, objective, (int)s->cur + 1, (int)s->nunits);
    }
    return st;
}

static tsq_status feed_batch(tsq_net *net, const char *where, const tsq_tensor *x, int32_t last,
                             int32_t *done)
{
    tsq__conversion *s = tsq__cvt_of(net);
    tsq_tensor *X = NULL, *P = NULL, *Y = NULL;
    int32_t rdone = 0;
    int64_t n;
    const tsq__cvt_rows *kept = NULL;
    tsq_status st = tsq__net_check_input(net, where, x, &n);
    if (st == TSQ_OK && (kept = kept_rows(net, s, x, n)) == NULL) {
        st = unit_rows(net, where, x, n, &X, &P, &Y);
        if (st == TSQ_OK)
            st = keep_rows(net, where, s, x, n, &X, &P, &Y);
        if (st == TSQ_OK && !X)
            kept = &s->rows[s->batch_in_pass];
    }
    if (st == TSQ_OK && (st = tsq_regressor_feed(s->reg, kept ? kept->X : X, kept ? kept->Y : Y,
                                                 kept ? kept->P : P)) != TSQ_OK)
        tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)s->units[s->cur].ref_layer,
                  tsq_regressor_errmsg(tsq__cvt_of(net)->reg));
    tsq_tensor_destroy(X);
    tsq_tensor_destroy(P);
    tsq_tensor_destroy(Y);
    if (st != TSQ_OK)
        return st;
    s->batch_in_pass++;
    if (!last)
        return TSQ_OK;
    st = tsq_regressor_end_pass(tsq__cvt_of(net)->reg, &rdone);
    if (st != TSQ_OK) {
        tsq__fail(&net->obj, st, "%s: layer %d: %s", where, (int)s->units[s->cur].ref_layer,
                  tsq_regressor_errmsg(tsq__cvt_of(net)->reg));
        tsq__cvt_end_session(net);
        return st;
    }
    s->units[s->cur].passes++;
    s->batch_in_pass = 0;
    if (!rdone)
        return TSQ_OK;
    st = tsq__progress(&net->obj, TSQ_PROGRESS_NET_FIT_TRANSFORM, s->cur + 1, s->nunits, where);
    if (st == TSQ_OK)
        st = finish_unit(net, where);
    if (st == TSQ_OK && ++s->cur < s->nunits)
        st = start_unit(net, where);
    if (st != TSQ_OK) {
        tsq__cvt_end_session(net);
        return st;
    }
    if (s->cur == s->nunits) {
        tsq__cvt_end_session(net);
        *done = 1;
    }
    return TSQ_OK;
}

tsq_status tsq_net_fit_transform(tsq_net *net, const tsq_tensor *x, int32_t last, int32_t *done)
{
    static const char *where = "net_fit_transform";
    tsq_status st;
    if (!net)
        return TSQ_ERR_NULL;
    st = tsq__cvt_enter(net, where, TSQ_NET_TSQ_FITTING, x, last, done);
    if (st != TSQ_OK)
        return st;
    *done = 0;
    if (!tsq__cvt_running(net)) {
        st = begin_fitting(net, where);
        if (st == TSQ_OK) {
            st = tsq__progress(&net->obj, TSQ_PROGRESS_NET_FIT_TRANSFORM, 0,
                               tsq__cvt_of(net)->nunits, where);
            if (st == TSQ_OK)
                st = start_unit(net, where);
            if (st != TSQ_OK)
                tsq__cvt_end_session(net);
        }
        if (st != TSQ_OK)
            return st;
    }
    st = feed_batch(net, where, x, last, done);
    if (st == TSQ_OK)
        tsq__clear(&net->obj);
    return st;
}

