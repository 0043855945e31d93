/* The quantizer's element-wise calls: encode (codes), forward (the
 * fake-quantized float k(x) * delta), decode and backward (the
 * straight-through gradient, docs/method.md §2.2). The element-wise kernels
 * (C oracle and AVX2) are in kernels/encode.c and encode_avx2.c, picked at
 * run time from the CPU detection made when the quantizer was created; encode,
 * forward and backward split large tensors over the context's threads. */
#include "quant/quantizer_internal.h"

#include <string.h>

/* Work is split into pieces of this many elements across threads, and only
 * tensors of at least PARALLEL_MIN_ELEMENTS are split at all. */
#define CHUNK ((int64_t)1 << 16)
#define PARALLEL_MIN_ELEMENTS ((int64_t)1 << 18)

/* ------------------------------------------------------------------ */
/* One threaded driver for the three element-wise operations            */
/* ------------------------------------------------------------------ */

enum { OP_ENCODE, OP_FORWARD, OP_BACKWARD };

/* Units that threads share: pieces of a per-tensor span, channel spans of
 * an N x C x ... tensor, or rows of an N x C one. */
typedef struct op_job {
    const tsq_quantizer *q;
    int op;
    const float *x;
    const float *go;   /* backward: the incoming gradient */
    void *out;         /* u8 codes, or f32 y / grad_in */
    tsq__qlayout l;
    int64_t nunits;
} op_job;

/* n elements from `start`: all of channel c, or (c < 0) a row of an N x C
 * tensor, whose element i uses channel i. */
static void run_piece(const op_job *job, int64_t start, int64_t n, int64_t c)
{
    const tsq_quantizer *q = job->q;
    const tsq__eltwise *k = q->kern;
    const float *x = job->x + start, *e = q->eps, *inv = q->inv_delta, *d = q->delta;
    int32_t m = tsq__qmax_code(q);
    if (job->op == OP_ENCODE) {
        uint8_t *codes = (uint8_t *)job->out + start;
        if (c < 0)
            k->encode_row(x, codes, n, e, inv, m);
        else
            k->encode_span(x, codes, n, e[c], inv[c], m);
    } else if (job->op == OP_FORWARD) {
        float *y = (float *)job->out + start;
        if (c < 0)
            k->fakequant_row(x, y, n, e, inv, d, m);
        else
            k->fakequant_span(x, y, n, e[c], inv[c], d[c], m);
    } else {
        const float *go = job->go + start;
        float *gi = (float *)job->out + start;
        if (c < 0)
            k->ste_row(x, go, gi, n, d, m);
        else
            k->ste_span(x, go, gi, n, d[c], m);
    }
}

static void run_unit(void *arg, int64_t u)
{
    const op_job *job = arg;
    const tsq_quantizer *q = job->q;
    if (q->channels == 0) {
        int64_t start = u * CHUNK;
        run_piece(job, start, job->l.numel - start < CHUNK ? job->l.numel - start : CHUNK, 0);
    } else if (job->l.inner > 1) {
        run_piece(job, u * job->l.inner, job->l.inner, u % q->channels);
    } else {
        run_piece(job, u * q->channels, q->channels, -1);
    }
}

static void run_all(const tsq_quantizer *q, int op, const float *x, const float *go, void *out,
                    const tsq__qlayout *l)
{
    op_job job;
    int64_t threads = q->obj.ctx->threads;
    job.q = q;
    job.op = op;
    job.x = x;
    job.go = go;
    job.out = out;
    job.l = *l;
    if (q->channels == 0)
        job.nunits = (l->numel + CHUNK - 1) / CHUNK;
    else if (l->inner > 1)
        job.nunits = l->outer * q->channels;
    else
        job.nunits = l->outer;
    if (l->numel < PARALLEL_MIN_ELEMENTS)
        threads = 1;
    tsq__parallel_for(threads, job.nunits, run_unit, &job);
}

void tsq__q_encode_all(const tsq_quantizer *q, const float *x, uint8_t *codes,
                       const tsq__qlayout *l)
{
    run_all(q, OP_ENCODE, x, NULL, codes, l);
}

/* ------------------------------------------------------------------ */
/* Public calls                                                         */
/* ------------------------------------------------------------------ */

/* The checks and the run shared by encode, forward and backward: x and the
 * output (and, for backward, grad_out) are f32 tensors of one shape, the
 * output of codes u8. */
static tsq_status run_checked(tsq_quantizer *q, const char *where, int op, const tsq_tensor *x,
                              const tsq_tensor *go, const char *out_name, tsq_tensor *out)
{
    tsq__qlayout l = {0, 0, 0};
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(tsq__q_require_fitted(q, where));
    TSQ_FORWARD_IF_ERROR(tsq__expect_dtype(&q->obj, where, "x", x, TSQ_DTYPE_F32));
    if (op == OP_BACKWARD)
        TSQ_FORWARD_IF_ERROR(
            tsq__q_check_like(q, where, "grad_out", go, TSQ_DTYPE_F32, "x", x));
    TSQ_FORWARD_IF_ERROR(tsq__q_check_like(q, where, out_name, out,
                                           op == OP_ENCODE ? TSQ_DTYPE_U8 : TSQ_DTYPE_F32,
                                           "x", x));
    TSQ_FORWARD_IF_ERROR(tsq__q_check_input(q, where, "x", x, &l));
    run_all(q, op, (const float *)x->data, go ? (const float *)go->data : NULL, out->data, &l);
    tsq__clear(&q->obj);
    return TSQ_OK;
}

tsq_status tsq_quantizer_encode(tsq_quantizer *q, const tsq_tensor *x, tsq_tensor *codes)
{
    return run_checked(q, "quantizer_encode", OP_ENCODE, x, NULL, "codes", codes);
}

tsq_status tsq_quantizer_forward(tsq_quantizer *q, const tsq_tensor *x, tsq_tensor *y)
{
    return run_checked(q, "quantizer_forward", OP_FORWARD, x, NULL, "y", y);
}

tsq_status tsq_quantizer_backward(tsq_quantizer *q, const tsq_tensor *x,
                                  const tsq_tensor *grad_out, tsq_tensor *grad_in)
{
    return run_checked(q, "quantizer_backward", OP_BACKWARD, x, grad_out, "grad_in", grad_in);
}

tsq_status tsq_quantizer_decode(tsq_quantizer *q, const tsq_tensor *codes, tsq_tensor *y)
{
    static const char *where = "quantizer_decode";
    const uint8_t *k;
    float *ys;
    int32_t maxcode;
    int64_t o, c, i;
    tsq__qlayout l = {0, 0, 0};
    if (!q)
        return TSQ_ERR_NULL;
    TSQ_FORWARD_IF_ERROR(tsq__q_require_fitted(q, where));
    TSQ_FORWARD_IF_ERROR(tsq__expect_dtype(&q->obj, where, "codes", codes, TSQ_DTYPE_U8));
    TSQ_FORWARD_IF_ERROR(tsq__q_check_like(q, where, "y", y, TSQ_DTYPE_F32, "codes", codes));
    TSQ_FORWARD_IF_ERROR(tsq__q_layout(q, where, "codes", codes, &l));
    maxcode = tsq__qmax_code(q);
    k = (const uint8_t *)codes->data;
    for (i = 0; i < l.numel; i++)
        TSQ_RETURN_ERROR_IF(k[i] > maxcode, &q->obj, TSQ_ERR_INVALID,
                            "%s: code %u at index %lld exceeds %d, the top code of %d bits",
                            where, (unsigned)k[i], (long long)i, (int)maxcode, (int)q->bits);
    ys = (float *)y->data;
    for (o = 0; o < l.outer; o++)
        for (c = 0; c < q->nparams; c++, k += l.inner, ys += l.inner) {
            float delta = q->delta[c];
            for (i = 0; i < l.inner; i++)
                ys[i] = (float)k[i] * delta;
        }
    tsq__clear(&q->obj);
    return TSQ_OK;
}
