/* The float convolution as GEMMs, shared by the conv2d and low-bit conv
 * layers and the inference plan.
 *
 * Per "unit" of images (one image, or g->group images side by side when the
 * output is small, since narrow GEMMs run well below the BLAS's speed):
 *     col = im2col(x)                        k x P   (P = positions)
 *     y   = [W b] [col; 1]                   cout x P
 *     [dW db] += dy [col; 1]^T,   dx = col2im(W^T dy)
 * The bias rides in the GEMMs through a row of ones under the patches: no
 * separate pass, and db is the last column of the weight gradient. A 1x1
 * stride-1 unpadded convolution is its own patch matrix (no ones row; the
 * bias then goes in an epilogue, like the low-bit layers' scale).
 *
 * Two ways to use several threads, chosen by TSQ_CONTEXT_THREADS:
 *  - 1 thread ("pipeline"): GEMMs issued one after another, threaded by
 *    the BLAS itself; a chunk of units at a time.
 *  - T > 1 threads ("workers"): each of libtsq's T threads takes every T-th
 *    unit and does its im2col, GEMMs and col2im alone, with its own
 *    buffers and its own weight-gradient accumulator; the accumulators are
 *    added in thread order at the end (deterministic for a given T). The
 *    BLAS runs one thread per call there (tsq__parallel_for sets
 *    OpenBLAS to one thread inside its regions).
 * Either way a unit's patch matrix is used right after it is built, while
 * it is in cache, and backward rebuilds it rather than keeping the whole
 * batch's. */
#include "kernels/conv.h"
#include "kernels/vec.h"

#include "blas.h"

#include <string.h>

/* Patch-matrix bytes that one pipeline chunk may use. */
#define CHUNK_BYTES (4u << 20)

typedef struct {
    int64_t slots;  /* unit buffers: pipeline chunk size, or one per worker */
    int64_t accs;   /* weight-gradient accumulators: 1, or one per worker */
    int64_t col, dcol, stage, slot_floats; /* offsets within a slot */
    int64_t wext;   /* [W b], shared */
    int64_t acc0;   /* first accumulator; each cout x (k + 1) */
    int64_t total;
} ws_layout;

static int workers_mode(int64_t threads)
{
    return threads > 1;
}

/* `units`: the most units a call will have (a pipeline chunk never holds
 * more slots than that; the layout of fewer slots is a prefix of the
 * layout of more, so a workspace sized for more always fits). */
static ws_layout layout(const tsq__conv_geom *g, int64_t threads, int64_t units)
{
    ws_layout L;
    int64_t cols = g->group * g->ohw;
    if (workers_mode(threads)) {
        L.slots = L.accs = threads;
    } else {
        int64_t unit_bytes = (g->k + 1) * cols * (int64_t)sizeof(float);
        L.slots = (int64_t)CHUNK_BYTES / unit_bytes;
        if (L.slots < 1)
            L.slots = 1;
        if (L.slots > 64)
            L.slots = 64;
        if (L.slots > units)
            L.slots = units < 1 ? 1 : units;
        L.accs = 1;
    }
    L.col = 0;
    L.dcol = L.col + (g->direct ? 0 : (g->k + 1) * cols);
    L.stage = L.dcol + g->k * cols;
    L.slot_floats = L.stage + (g->group > 1 ? g->cout * cols : 0);
    L.slot_floats = (L.slot_floats + 15) / 16 * 16; /* own cache lines per slot */
    L.wext = L.slots * L.slot_floats;
    L.acc0 = L.wext + g->cout * (g->k + 1);
    L.total = L.acc0 + L.accs * g->cout * (g->k + 1);
    return L;
}

/* Per thread of the direct backward: a weight-gradient accumulator and
 * the kernels' scratch. */
static int64_t grad_slot(const tsq__conv_geom *g)
{
    return (tsq__conv_grad_ld(g) * (g->k + 1) + tsq__conv_grad_ws_floats(g) + 15) / 16 * 16;
}

/* The GEMM path's floats, or the direct paths' (one image's scratch per
 * thread) when those are more. */
static size_t ws_max(const tsq__conv_geom *g, int64_t threads, int64_t total)
{
    int64_t direct = threads * tsq__conv_direct_ws_floats(g) + tsq__conv_direct_pack_floats(g);
    int64_t grad = threads * grad_slot(g) + tsq__conv_grad_prep_floats(g);
    if (direct < grad)
        direct = grad;
    return (size_t)(direct > total ? direct : total);
}

size_t tsq__conv_ws_floats(const tsq__conv_geom *g, int64_t threads, int backward)
{
    (void)backward; /* one layout serves both directions */
    threads = threads < 1 ? 1 : threads;
    return ws_max(g, threads, layout(g, threads, INT64_MAX).total);
}

size_t tsq__conv_forward_ws_floats(const tsq__conv_geom *g, int64_t threads, int64_t batch)
{
    threads = threads < 1 ? 1 : threads;
    return ws_max(g, threads, layout(g, threads, (batch + g->group - 1) / g->group).total);
}

typedef struct {
    const tsq__conv_geom *g;
    ws_layout L;
    const float *x, *w, *scale, *bias, *dy;
    const float *A;   /* the forward GEMM's weights: w, or [W b] */
    float *y, *dx, *ws;
    int64_t batch, units, threads;
    int64_t first;    /* pipeline: first unit of the current chunk */
    int64_t count;    /* pipeline: images in the current chunk */
    int ones;         /* patch matrices carry the ones row */
    int epilogue;     /* forward needs a pass after the GEMM */
    int64_t cols;     /* columns of the accumulated [dW db]: k or k + 1 */
    int phase;        /* pipeline: what chunk_task does to each image */
} conv_job;

enum { PHASE_PATCHES, PHASE_EPILOGUE, PHASE_BACKWARD_PREP, PHASE_COL2IM };

static int64_t in_size(const tsq__conv_geom *g)
{
    return g->cin * g->h * g->w;
}

static int64_t unit_images(const conv_job *j, int64_t u)
{
    int64_t left = j->batch - u * j->g->group;
    return left < j->g->group ? left : j->g->group;
}

static float *slot_col(const conv_job *j, int64_t s)
{
    return j->ws + s * j->L.slot_floats + j->L.col;
}

static float *slot_dcol(const conv_job *j, int64_t s)
{
    return j->ws + s * j->L.slot_floats + j->L.dcol;
}

static float *slot_stage(const conv_job *j, int64_t s)
{
    return j->ws + s * j->L.slot_floats + j->L.stage;
}

static float *acc(const conv_job *j, int64_t a)
{
    return j->ws + j->L.acc0 + a * j->g->cout * (j->g->k + 1);
}

/* ---- per image i of unit u held in slot s ---- */

static void image_patches(const conv_job *j, int64_t u, int64_t s, int64_t i)
{
    const tsq__conv_geom *g = j->g;
    int64_t ld = unit_images(j, u) * g->ohw, p;
    float *col = slot_col(j, s) + i * g->ohw;
    if (g->direct)
        return;
    tsq__im2col(g, j->x + (u * g->group + i) * in_size(g), col, ld);
    if (j->ones)
        for (p = 0; p < g->ohw; p++)
            col[g->k * ld + p] = 1.0f;
}

/* After the forward GEMM: out of the staging matrix and/or scale and bias. */
static void image_epilogue(const conv_job *j, int64_t u, int64_t s, int64_t i)
{
    const tsq__conv_geom *g = j->g;
    int64_t P = g->ohw, ld = unit_images(j, u) * P, co;
    float *yn = j->y + (u * g->group + i) * g->cout * P;
    const float *src = g->group > 1 ? slot_stage(j, s) + i * P : yn;
    int add_bias = j->bias && !j->ones;
    for (co = 0; co < g->cout; co++) {
        const float *from = src + co * (g->group > 1 ? ld : P);
        float *to = yn + co * P;
        float a = j->scale ? j->scale[co] : 1.0f, b = add_bias ? j->bias[co] : 0.0f;
        if (from == to)
            tsq__vec_affine_inplace(to, a, b, P);
        else if (j->scale || add_bias)
            tsq__vec_affine(to, from, a, b, P);
        else
            memcpy(to, from, (size_t)P * sizeof(float));
    }
}

/* Backward: dy of the unit side by side (units of several images). */
static void image_gather(const conv_job *j, int64_t u, int64_t s, int64_t i)
{
    const tsq__conv_geom *g = j->g;
    int64_t P = g->ohw, ld = unit_images(j, u) * P, co;
    const float *dyn = j->dy + (u * g->group + i) * g->cout * P;
    float *S = slot_stage(j, s) + i * P;
    for (co = 0; co < g->cout; co++)
        memcpy(S + co * ld, dyn + co * P, (size_t)P * sizeof(float));
}

static void image_col2im(const conv_job *j, int64_t u, int64_t s, int64_t i)
{
    const tsq__conv_geom *g = j->g;
    int64_t ld = unit_images(j, u) * g->ohw;
    tsq__col2im(g, slot_dcol(j, s) + i * g->ohw, ld, j->dx + (u * g->group + i) * in_size(g));
}

/* ---- per unit: the GEMMs ---- */

static const float *unit_patches(const conv_job *j, int64_t u, int64_t s)
{
    if (j->g->direct)
        return j->x + u * j->g->group * in_size(j->g);
    return slot_col(j, s);
}

static void unit_forward_gemm(const conv_job *j, int64_t u, int64_t s)
{
    const tsq__conv_geom *g = j->g;
    int64_t ld = unit_images(j, u) * g->ohw, lda = j->ones ? g->k + 1 : g->k;
    float *C = g->group > 1 ? slot_stage(j, s) : j->y + u * g->cout * g->ohw;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->cout, (int)ld, (int)lda, 1.0f,
                j->A, (int)lda, unit_patches(j, u, s), (int)ld, 0.0f, C, (int)ld);
}

static void unit_backward_gemms(const conv_job *j, int64_t u, int64_t s, float *accum)
{
    const tsq__conv_geom *g = j->g;
    int64_t ld = unit_images(j, u) * g->ohw;
    const float *D = g->group > 1 ? slot_stage(j, s) : j->dy + u * g->cout * g->ohw;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->cout, (int)j->cols, (int)ld,
                1.0f, D, (int)ld, unit_patches(j, u, s), (int)ld, 1.0f, accum, (int)j->cols);
    if (j->dx)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g->k, (int)ld, (int)g->cout,
                    1.0f, j->w, (int)g->k, D, (int)ld, 0.0f,
                    g->direct ? j->dx + u * in_size(g) : slot_dcol(j, s), (int)ld);
}

/* ---- workers mode: thread t takes units t, t + T, ... ---- */

static void forward_worker(void *arg, int64_t t)
{
    const conv_job *j = arg;
    int64_t u, i;
    for (u = t; u < j->units; u += j->threads) {
        for (i = 0; i < unit_images(j, u); i++)
            image_patches(j, u, t, i);
        unit_forward_gemm(j, u, t);
        if (j->epilogue)
            for (i = 0; i < unit_images(j, u); i++)
                image_epilogue(j, u, t, i);
    }
}

static void backward_worker(void *arg, int64_t t)
{
    const conv_job *j = arg;
    int64_t u, i;
    memset(acc(j, t), 0, (size_t)(j->g->cout * j->cols) * sizeof(float));
    for (u = t; u < j->units; u += j->threads) {
        for (i = 0; i < unit_images(j, u); i++) {
            image_patches(j, u, t, i);
            if (j->g->group > 1)
                image_gather(j, u, t, i);
        }
        unit_backward_gemms(j, u, t, acc(j, t));
        if (j->dx && !j->g->direct)
            for (i = 0; i < unit_images(j, u); i++)
                image_col2im(j, u, t, i);
    }
}

/* ---- pipeline mode: image tasks of the current chunk ---- */

static void chunk_image(const conv_job *j, int64_t k, int64_t *u, int64_t *s, int64_t *i)
{
    *s = k / j->g->group;
    *u = j->first + *s;
    *i = k % j->g->group;
}

/* Image k of the current chunk through the job's current phase. */
static void chunk_task(void *arg, int64_t k)
{
    const conv_job *j = arg;
    int64_t u, s, i;
    chunk_image(j, k, &u, &s, &i);
    switch (j->phase) {
    case PHASE_PATCHES: image_patches(j, u, s, i); break;
    case PHASE_EPILOGUE: image_epilogue(j, u, s, i); break;
    case PHASE_BACKWARD_PREP:
        image_patches(j, u, s, i);
        if (j->g->group > 1)
            image_gather(j, u, s, i);
        break;
    default: image_col2im(j, u, s, i); break;
    }
}

/* Runs one image phase over the current chunk, across the threads. */
static void run_phase(conv_job *j, int phase)
{
    j->phase = phase;
    tsq__parallel_for(j->threads, j->count, chunk_task, j);
}

/* Walks the batch chunk by chunk; between the parallel image phases the
 * GEMMs run on this thread (threaded by the BLAS). */
static void pipeline(conv_job *j, int backward)
{
    const tsq__conv_geom *g = j->g;
    int64_t u;
    for (j->first = 0; j->first < j->units; j->first += j->L.slots) {
        int64_t last = j->first + j->L.slots < j->units ? j->first + j->L.slots : j->units;
        j->count = (last == j->units ? j->batch : last * g->group) - j->first * g->group;
        if (!backward) {
            if (!g->direct)
                run_phase(j, PHASE_PATCHES);
            for (u = j->first; u < last; u++)
                unit_forward_gemm(j, u, u - j->first);
            if (j->epilogue)
                run_phase(j, PHASE_EPILOGUE);
        } else {
            if (!g->direct || g->group > 1)
                run_phase(j, PHASE_BACKWARD_PREP);
            for (u = j->first; u < last; u++)
                unit_backward_gemms(j, u, u - j->first, acc(j, 0));
            if (j->dx && !g->direct)
                run_phase(j, PHASE_COL2IM);
        }
    }
}

static void init_job(conv_job *j, const tsq__conv_geom *g, int64_t threads, int64_t batch,
                     float *ws, int ones)
{
    memset(j, 0, sizeof *j);
    j->g = g;
    j->threads = threads < 1 ? 1 : threads;
    j->batch = batch;
    j->units = (batch + g->group - 1) / g->group;
    j->L = layout(g, j->threads, j->units);
    j->ws = ws;
    j->ones = ones;
    j->cols = ones ? g->k + 1 : g->k;
}

typedef struct {
    tsq__conv_direct_op op;
    tsq__conv_direct_fn fn;
    const float *x;
    float *y, *ws;
    int64_t batch, threads;
} direct_job;

/* Thread t takes images t, t + T, ... with its own scratch (after the
 * packed weights). */
static void direct_worker(void *arg, int64_t t)
{
    const direct_job *d = arg;
    const tsq__conv_geom *g = d->op.g;
    float *scratch = d->ws + tsq__conv_direct_pack_floats(g) + t * tsq__conv_direct_ws_floats(g);
    int64_t n;
    for (n = t; n < d->batch; n += d->threads)
        d->fn(&d->op, d->x + n * in_size(g), d->y + n * g->cout * g->ohw, scratch);
}

void tsq__conv_forward(const tsq__conv_geom *g, int64_t threads, uint32_t cpu, const float *x,
                       const float *w, const float *scale, const float *bias, float *y,
                       int64_t batch, float *ws)
{
    conv_job j;
    if (tsq__conv_direct_runs(g, cpu)) {
        direct_job d;
        d.op.g = g;
        d.op.w = w;
        d.op.packed = ws;
        d.op.scale = scale;
        d.op.bias = bias;
        d.fn = tsq__conv_direct_for(cpu, g);
        d.x = x;
        d.y = y;
        d.ws = ws;
        d.batch = batch;
        d.threads = threads < batch ? threads : batch;
        if (d.threads < 1)
            d.threads = 1;
        tsq__conv_direct_pack(g, w, ws);
        tsq__parallel_for(d.threads, d.threads, direct_worker, &d);
        return;
    }
    /* The scale of a low-bit layer must come before its bias: then the bias
     * goes in the epilogue with it. */
    init_job(&j, g, threads, batch, ws, !g->direct && !scale && bias);
    j.x = x;
    j.w = w;
    j.scale = scale;
    j.bias = bias;
    j.y = y;
    j.epilogue = g->group > 1 || scale || (bias && !j.ones);
    j.A = w;
    if (j.ones) {
        float *wb = ws + j.L.wext;
        int64_t co;
        for (co = 0; co < g->cout; co++) {
            memcpy(wb + co * (g->k + 1), w + co * g->k, (size_t)g->k * sizeof(float));
            wb[co * (g->k + 1) + g->k] = bias[co];
        }
        j.A = wb;
    }
    if (workers_mode(j.threads))
        tsq__parallel_for(j.threads, j.threads, forward_worker, &j);
    else
        pipeline(&j, 0);
}

typedef struct {
    const tsq__conv_geom *g;
    const float *dy;
    float *db;
    int64_t batch;
} bias_job;

/* db by channel, when the bias did not ride in the GEMM. */
static void bias_grad_range(void *arg, int64_t lo, int64_t hi)
{
    const bias_job *b = arg;
    int64_t c, n, P = b->g->ohw;
    for (c = lo; c < hi; c++) {
        double s = 0.0, unused = 0.0;
        for (n = 0; n < b->batch; n++)
            tsq__vec_sums(b->dy + (n * b->g->cout + c) * P, P, &s, &unused);
        b->db[c] = (float)s;
    }
}

typedef struct {
    const tsq__conv_geom *g;
    tsq__conv_grad_fns fn;
    const float *x, *wp, *dy; /* wp: the weights in the dx kernel's layout */
    float *dx, *ws;
    int64_t batch, threads, cols;
} grad_job;

/* Thread t takes images t, t + T, ... (the GEMM path's workers do the
 * same) into its own accumulator. */
static void grad_worker(void *arg, int64_t t)
{
    const grad_job *d = arg;
    const tsq__conv_geom *g = d->g;
    float *acc = d->ws + t * grad_slot(g), *scratch = acc + tsq__conv_grad_ld(g) * d->cols;
    int64_t n;
    memset(acc, 0, (size_t)(tsq__conv_grad_ld(g) * d->cols) * sizeof(float));
    for (n = t; n < d->batch; n += d->threads) {
        d->fn.dw(g, d->x + n * in_size(g), d->dy + n * g->cout * g->ohw, d->cols, acc, scratch);
        if (d->dx)
            d->fn.dx(g, d->wp, d->dy + n * g->cout * g->ohw, d->dx + n * in_size(g), scratch);
    }
}

/* The backward without GEMMs (conv_grad.c): the accumulators added in
 * thread order, as the GEMM path adds its workers'. */
static void backward_direct(const tsq__conv_geom *g, int64_t threads, uint32_t cpu,
                            const float *x, const float *w, const float *dy, float *dw,
                            float *db, float *dx, int64_t batch, float *ws)
{
    grad_job d = {g, tsq__conv_grad_for(cpu), x, NULL, dy, dx, ws, batch,
                  threads < batch ? threads : batch, db ? g->k + 1 : g->k};
    int64_t ld = tsq__conv_grad_ld(g), co, t;
    float *wp;
    if (d.threads < 1)
        d.threads = 1;
    wp = ws + d.threads * grad_slot(g); /* after the threads' slots */
    if (dx)
        d.fn.prep(g, w, wp);
    d.wp = wp;
    tsq__parallel_for(d.threads, d.threads, grad_worker, &d);
    for (t = 1; t < d.threads; t++)
        tsq__vec_add(ws, ws + t * grad_slot(g), ld * d.cols);
    for (co = 0; co < g->cout; co++) { /* the accumulator is [dW db] transposed */
        for (t = 0; t < g->k; t++)
            dw[co * g->k + t] = ws[t * ld + co];
        if (db)
            db[co] = ws[g->k * ld + co];
    }
}

void tsq__conv_backward(const tsq__conv_geom *g, int64_t threads, uint32_t cpu, const float *x,
                        const float *w, const float *dy, float *dw, float *db, float *dx,
                        int64_t batch, float *ws)
{
    conv_job j;
    float *total;
    int64_t co, t, n;
    if (tsq__conv_grad_direct_runs(g, cpu)) {
        backward_direct(g, threads, cpu, x, w, dy, dw, db, dx, batch, ws);
        return;
    }
    init_job(&j, g, threads, batch, ws, db && !g->direct);
    j.x = x;
    j.w = w;
    j.dy = dy;
    j.dx = dx;
    total = acc(&j, 0);
    if (workers_mode(j.threads)) {
        tsq__parallel_for(j.threads, j.threads, backward_worker, &j);
        /* A worker with no unit left its accumulator zeroed. */
        n = g->cout * j.cols;
        for (t = 1; t < j.threads; t++)
            tsq__vec_add(total, acc(&j, t), n);
    } else {
        memset(total, 0, (size_t)(g->cout * j.cols) * sizeof(float));
        pipeline(&j, 1);
    }
    for (co = 0; co < g->cout; co++)
        memcpy(dw + co * g->k, total + co * j.cols, (size_t)g->k * sizeof(float));
    if (db && j.ones) {
        for (co = 0; co < g->cout; co++)
            db[co] = total[co * j.cols + g->k];
    } else if (db) {
        bias_job b = {g, dy, db, batch};
        tsq__parallel_range(j.threads, g->cout, batch * g->ohw, bias_grad_range, &b);
    }
}
