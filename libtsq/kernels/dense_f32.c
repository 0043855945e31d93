/* The float dense product as GEMMs (kernels/conv.h), shared by the dense
 * and low-bit dense layers and the inference plan:
 *     Y (N x out) = X (N x in) W^T,  dW = dY^T X,  dX = dY W,  db = colsum dY.
 * With one libtsq thread the BLAS threads each GEMM; with T > 1 libtsq's
 * threads each take a contiguous block of rows (of the batch for Y and dX,
 * of the outputs for dW and db) and the BLAS runs one thread per call
 * (tsq__parallel_for keeps OpenBLAS single-threaded inside). */
#include "kernels/conv.h"
#include "kernels/vec.h"

#include "blas.h"


typedef struct {
    int64_t in, out, batch, threads;
    const float *x, *w, *scale, *bias, *dy;
    float *y, *dw, *db, *dx;
} dense_job;

static void block(int64_t n, int64_t parts, int64_t t, int64_t *lo, int64_t *hi)
{
    *lo = n * t / parts;
    *hi = n * (t + 1) / parts;
}

static void forward_rows(const dense_job *j, int64_t lo, int64_t hi)
{
    int64_t n, o;
    if (hi <= lo)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(hi - lo), (int)j->out, (int)j->in,
                1.0f, j->x + lo * j->in, (int)j->in, j->w, (int)j->in, 0.0f, j->y + lo * j->out,
                (int)j->out);
    for (n = lo; n < hi; n++) {
        float *row = j->y + n * j->out;
        if (j->scale) {
            for (o = 0; o < j->out; o++)
                row[o] = j->scale[o] * row[o] + (j->bias ? j->bias[o] : 0.0f);
        } else if (j->bias) {
            tsq__vec_add(row, j->bias, j->out);
        }
    }
}

static void forward_task(void *arg, int64_t t)
{
    const dense_job *j = arg;
    int64_t lo, hi;
    block(j->batch, j->threads, t, &lo, &hi);
    forward_rows(j, lo, hi);
}

void tsq__dense_forward(int64_t threads, int64_t in, int64_t out, const float *x,
                        const float *w, const float *scale, const float *bias, float *y,
                        int64_t batch)
{
    dense_job j = {.in = in, .out = out, .batch = batch, .x = x, .w = w,
                   .scale = scale, .bias = bias, .y = y};
    j.threads = threads > batch ? batch : threads;
    if (j.threads > 1)
        tsq__parallel_for(j.threads, j.threads, forward_task, &j);
    else
        forward_rows(&j, 0, batch);
}

/* dW and db for outputs [lo, hi). */
static void weight_grad_rows(const dense_job *j, int64_t lo, int64_t hi)
{
    int64_t n, o;
    if (hi <= lo)
        return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), (int)j->in,
                (int)j->batch, 1.0f, j->dy + lo, (int)j->out, j->x, (int)j->in, 0.0f,
                j->dw + lo * j->in, (int)j->in);
    if (!j->db)
        return;
    for (o = lo; o < hi; o++)
        j->db[o] = 0.0f;
    for (n = 0; n < j->batch; n++)
        tsq__vec_add(j->db + lo, j->dy + n * j->out + lo, hi - lo);
}

static void input_grad_rows(const dense_job *j, int64_t lo, int64_t hi)
{
    if (hi <= lo || !j->dx)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)j->in,
                (int)j->out, 1.0f, j->dy + lo * j->out, (int)j->out, j->w, (int)j->in, 0.0f,
                j->dx + lo * j->in, (int)j->in);
}

static void backward_task(void *arg, int64_t t)
{
    const dense_job *j = arg;
    int64_t lo, hi;
    block(j->out, j->threads, t, &lo, &hi);
    weight_grad_rows(j, lo, hi);
    block(j->batch, j->threads, t, &lo, &hi);
    input_grad_rows(j, lo, hi);
}

void tsq__dense_backward(int64_t threads, int64_t in, int64_t out, const float *x,
                         const float *w, const float *dy, float *dw, float *db, float *dx,
                         int64_t batch)
{
    dense_job j = {.in = in, .out = out, .batch = batch, .x = x, .w = w,
                   .dy = dy, .dw = dw, .db = db, .dx = dx};
    j.threads = threads;
    if (j.threads > out && j.threads > batch)
        j.threads = out > batch ? out : batch;
    if (j.threads > 1) {
        tsq__parallel_for(j.threads, j.threads, backward_task, &j);
    } else {
        weight_grad_rows(&j, 0, out);
        input_grad_rows(&j, 0, batch);
    }
}

