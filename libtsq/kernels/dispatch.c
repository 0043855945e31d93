/* The low-bit GEMM driver: kernel choice from the CPU features, workspace
 * layout, argument checks, and the split of the product into row blocks
 * (and, for few rows, column ranges) over the context's threads. */
#include "kernels_internal.h"

#include <string.h>

/* Rows per block, at most: the unit of work of a thread, of the activation
 * bit planes and of the threshold epilogue's int32 buffer. A multiple of
 * every kernel's tile height (4, 6, 8). */
#define BLOCK_ROWS 96
/* Column ranges start on multiples of this (the widest tile). */
#define COL_ALIGN 32
/* Alignment of each workspace part. */
#define WS_ALIGN 64

static const char *const kernel_names[] = {"auto", "ref", "avx2", "vnni", "vpopcnt"};

const char *tsq_kernel_name(int32_t kernel)
{
    if (kernel < TSQ_KERNEL_AUTO || kernel > TSQ_KERNEL_VPOPCNT)
        return "unknown";
    return kernel_names[kernel];
}

/* CPU feature bits a kernel needs, and their names for messages. */
static uint32_t kernel_needs(int32_t kernel, const char **names)
{
    const uint32_t avx512 = TSQ_CPU_AVX2 | TSQ_CPU_FMA | TSQ_CPU_AVX512F | TSQ_CPU_AVX512BW |
                            TSQ_CPU_AVX512VL;
    switch (kernel) {
    case TSQ_KERNEL_AVX2:
        *names = "AVX2 and FMA";
        return TSQ_CPU_AVX2 | TSQ_CPU_FMA;
    case TSQ_KERNEL_VNNI:
        *names = "AVX-512 F/BW/VL and AVX512_VNNI";
        return avx512 | TSQ_CPU_AVX512VNNI;
    case TSQ_KERNEL_VPOPCNT:
        *names = "AVX-512 F/BW/VL and AVX512_VPOPCNTDQ";
        return avx512 | TSQ_CPU_AVX512VPOPCNTDQ;
    default:
        *names = "";
        return 0;
    }
}

static int cpu_runs(int32_t kernel, uint32_t features)
{
    const char *names;
    uint32_t need = kernel_needs(kernel, &names);
    return (features & need) == need;
}

int tsq__kernel_runs(int32_t kernel, uint32_t features) { return cpu_runs(kernel, features); }

tsq_status tsq_kernel_available(int32_t kernel, int32_t *available)
{
    if (!available)
        return TSQ_ERR_NULL;
    if (kernel < TSQ_KERNEL_AUTO || kernel > TSQ_KERNEL_VPOPCNT)
        return TSQ_ERR_INVALID;
    *available = cpu_runs(kernel, tsq__cpu_detect());
    return TSQ_OK;
}

/* TSQ_KERNEL_AUTO: the fastest kernel measured per shape class (the
 * "bits_*" lines of tests/bench/bench_kernels.c, tabulated in
 * docs/kernels.md). The bit-serial kernel's work grows with
 * code_bits * weight_bits, the byte kernels' does not; but the byte kernels
 * decode the weights once per call, which a few rows cannot amortise. */
#define AUTO_FEW_ROWS 8     /* up to here the bit-serial kernel won at every width */
#define AUTO_MAX_TERMS 4    /* code_bits * weight_bits up to which it won on GEMMs */

static int32_t auto_kernel(uint32_t f, int64_t m, int32_t code_bits, int32_t weight_bits)
{
    if (cpu_runs(TSQ_KERNEL_VPOPCNT, f) &&
        (m <= AUTO_FEW_ROWS || code_bits * weight_bits <= AUTO_MAX_TERMS))
        return TSQ_KERNEL_VPOPCNT;
    if (cpu_runs(TSQ_KERNEL_VNNI, f))
        return TSQ_KERNEL_VNNI;
    if (cpu_runs(TSQ_KERNEL_AVX2, f))
        return TSQ_KERNEL_AVX2;
    return TSQ_KERNEL_REF;
}

tsq_status tsq__kernel_resolve_for(tsq__object *obj, const char *where, int32_t kernel,
                                   uint32_t f, int64_t m, int32_t code_bits,
                                   int32_t weight_bits, int32_t *chosen)
{
    const char *names;
    if (kernel < TSQ_KERNEL_AUTO || kernel > TSQ_KERNEL_VPOPCNT)
        return tsq__fail(obj, TSQ_ERR_INVALID, "%s: unknown kernel %d", where, (int)kernel);
    if (kernel == TSQ_KERNEL_AUTO) {
        *chosen = auto_kernel(f, m, code_bits, weight_bits);
        return TSQ_OK;
    }
    if (!cpu_runs(kernel, f)) {
        kernel_needs(kernel, &names);
        return tsq__fail(obj, TSQ_ERR_UNSUPPORTED,
                         "%s: kernel '%s' needs %s, which this CPU does not have", where,
                         tsq_kernel_name(kernel), names);
    }
    *chosen = kernel;
    return TSQ_OK;
}

tsq_status tsq__kernel_resolve(tsq__object *obj, const char *where, int32_t kernel,
                               int64_t m, int32_t code_bits, int32_t weight_bits,
                               int32_t *chosen)
{
    return tsq__kernel_resolve_for(obj, where, kernel, obj->ctx->cpu, m, code_bits,
                                   weight_bits, chosen);
}

/* ---- workspace ---------------------------------------------------------- */

/* The decoded-panel kernels either decode all panels once, shared by every
 * thread (many rows: the decode is paid once for all row blocks), or, for
 * at most one row block, "stream": each thread decodes the two panels it is
 * about to use into its own scratch, so a GEMV never writes and re-reads a
 * K x N byte matrix through memory. */

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static int64_t padded_cols(int64_t n) { return (n + COL_ALIGN - 1) / COL_ALIGN * COL_ALIGN; }

/* Rows per block: BLOCK_ROWS, or, when that would leave threads with
 * unequal shares (M = 128 on 2 threads: 96 + 32), an equal split rounded
 * up to a multiple of 8. */
static int64_t block_rows(int64_t m, int64_t threads)
{
    int64_t share;
    if (threads <= 1 || m > (int64_t)BLOCK_ROWS * threads) /* also keeps m + threads small */
        return m < BLOCK_ROWS ? m : BLOCK_ROWS;
    share = (m + threads - 1) / threads;
    share = (share + 7) / 8 * 8;
    if (share > BLOCK_ROWS || threads <= 1)
        share = BLOCK_ROWS;
    return m < share ? m : share;
}

/* Sizes are products of values below 2^31 and small constants, computed in
 * double first to refuse anything that would not fit in 62 bits. */
static tsq_status layout_ws(tsq__object *obj, const char *where, const tsq_packed_weights *pw,
                            int64_t m, int32_t code_bits, int32_t kernel, int64_t threads,
                            tsq__lowbit_ws *ws)
{
    int64_t rows = block_rows(m, threads);
    double panel = (double)tsq__k4n(pw->k) * 64.0, shared = 0, scratch = 0, block, total;
    ws->streaming = 0;
    if (kernel == TSQ_KERNEL_REF) {
        shared = (double)pw->k * (double)pw->n;
    } else if (kernel == TSQ_KERNEL_AVX2 || kernel == TSQ_KERNEL_VNNI) {
        ws->streaming = m <= BLOCK_ROWS;
        if (ws->streaming)
            scratch = 2.0 * panel;
        else
            shared = (double)tsq__panels(pw->n) * panel;
    } else if (kernel == TSQ_KERNEL_VPOPCNT) {
        scratch = (double)rows * code_bits * (double)pw->kwords * 8.0;
    }
    block = (double)rows * (double)padded_cols(pw->n) * 4.0;
    total = shared + (double)threads * (scratch + block + 3.0 * WS_ALIGN) + 2.0 * WS_ALIGN;
    if (total > 4.0e18)
        return tsq__fail(obj, TSQ_ERR_OVERFLOW, "%s: workspace size overflows", where);
    ws->shared = round_up((uint64_t)shared, WS_ALIGN);
    ws->scratch = round_up((uint64_t)scratch, WS_ALIGN);
    ws->block = round_up((uint64_t)block, WS_ALIGN);
    ws->rows = rows;
    ws->threads = threads;
    ws->total = ws->shared + (uint64_t)threads * (ws->scratch + ws->block) + WS_ALIGN;
    return TSQ_OK;
}

/* ---- argument checks ----------------------------------------------------- */


/* Threads are started per call (tsq__parallel_for), some tens of
 * microseconds each: a thread gets at least 2^20 multiply-adds or none, so
 * the split follows the work size (a batch of one runs on one thread). */
static int64_t useful_threads(int64_t threads, int64_t m, int64_t k, int64_t n)
{
    double work = (double)m * (double)k * (double)n / 1048576.0;
    return work < (double)threads ? (work < 1.0 ? 1 : (int64_t)work) : threads;
}

static tsq_status check_codes(tsq__object *obj, const char *where, const tsq_tensor *codes,
                              int32_t code_bits)
{
    int64_t n = codes->numel, i, k = codes->shape[codes->ndim - 1];
    const uint8_t *x = codes->data;
    uint8_t any = 0;
    int32_t maxcode = tsq__max_code(code_bits);
    if (maxcode == 255)
        return TSQ_OK;
    /* One OR over all codes (vectorised where possible) tells whether any
     * is too large; only then is the first one searched for the message. */
    if (cpu_runs(TSQ_KERNEL_AVX2, obj->ctx->cpu))
        any = tsq__or_bytes_avx2(x, n);
    else
        for (i = 0; i < n; i++)
            any |= x[i];
    if (!(any & ~maxcode))
        return TSQ_OK;
    for (i = 0; i < n && x[i] <= maxcode; i++)
        ;
    return tsq__fail(obj, TSQ_ERR_INVALID,
                     "%s: codes[%lld][%lld] = %d exceeds 2^%d - 1 = %d", where,
                     (long long)(i / k), (long long)(i % k), (int)x[i], (int)code_bits,
                     (int)maxcode);
}

tsq_status tsq__lowbit_prepare(tsq_context *ctx, const char *where, const tsq_packed_weights *pw,
                               int64_t m, int32_t code_bits, int32_t kernel, int64_t threads,
                               tsq__lowbit_call *call)
{
    tsq_status st = tsq__kernel_resolve(&ctx->obj, where, kernel, m, code_bits, pw->bits,
                                        &call->kernel);
    if (st != TSQ_OK)
        return st;
    call->threads = useful_threads(threads, m, pw->k, pw->n);
    st = layout_ws(&ctx->obj, where, pw, m, code_bits, call->kernel, call->threads, &call->ws);
    if (st != TSQ_OK)
        return st;
    call->x = NULL;
    call->m = m;
    call->k = pw->k;
    call->code_bits = code_bits;
    return TSQ_OK;
}

static tsq_status check_call(tsq_context *ctx, const char *where, const tsq_packed_weights *pw,
                             const tsq_tensor *codes, int32_t code_bits, int32_t kernel,
                             void *workspace, uint64_t workspace_bytes, tsq__lowbit_call *call)
{
    tsq__object *obj = &ctx->obj;
    int64_t m, k;
    tsq_status st;
    if (!pw)
        return tsq__fail(obj, TSQ_ERR_NULL, "%s: packed weights are NULL", where);
    st = tsq__expect_dtype(obj, where, "codes", codes, TSQ_DTYPE_U8);
    if (st != TSQ_OK)
        return st;
    if (code_bits < 1 || code_bits > 8)
        return tsq__fail(obj, TSQ_ERR_INVALID, "%s: code_bits %d is outside 1..8", where,
                         (int)code_bits);
    if (codes->ndim > 2)
        return tsq__fail(obj, TSQ_ERR_SHAPE, "%s: codes have %d dimensions, expected M x K",
                         where, (int)codes->ndim);
    m = codes->ndim == 2 ? codes->shape[0] : 1;
    k = codes->shape[codes->ndim - 1];
    if (k != pw->k)
        return tsq__fail(obj, TSQ_ERR_SHAPE, "%s: codes have %lld columns, the weights %lld rows",
                         where, (long long)k, (long long)pw->k);
    if ((double)k * tsq__max_code(code_bits) * tsq__max_weight(pw->bits) > (double)INT32_MAX)
        return tsq__fail(obj, TSQ_ERR_OVERFLOW,
                         "%s: K = %lld with %d-bit codes and %d-bit weights can overflow int32",
                         where, (long long)k, (int)code_bits, (int)pw->bits);
    if (!workspace && workspace_bytes)
        return tsq__fail(obj, TSQ_ERR_NULL, "%s: workspace is NULL but workspace_bytes is %llu",
                         where, (unsigned long long)workspace_bytes);
    st = tsq__lowbit_prepare(ctx, where, pw, m, code_bits, kernel, ctx->threads, call);
    if (st != TSQ_OK)
        return st;
    if (workspace && workspace_bytes < call->ws.total)
        return tsq__fail(obj, TSQ_ERR_TOO_SMALL,
                         "%s: workspace has %llu bytes, kernel '%s' needs %llu", where,
                         (unsigned long long)workspace_bytes, tsq_kernel_name(call->kernel),
                         (unsigned long long)call->ws.total);
    st = check_codes(obj, where, codes, code_bits);
    if (st != TSQ_OK)
        return st;
    call->x = codes->data;
    return TSQ_OK;
}

tsq_status tsq_lowbit_kernel_select(tsq_context *ctx, const tsq_packed_weights *pw,
                                    int64_t m, int32_t code_bits, int32_t kernel,
                                    int32_t *chosen)
{
    static const char *where = "lowbit_kernel_select";
    int32_t k;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!pw || !chosen)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: %s is NULL", where,
                         !pw ? "pw" : "chosen");
    if (m < 1 || code_bits < 1 || code_bits > 8)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: m = %lld, code_bits = %d (need m >= 1, "
                         "code_bits 1..8)", where, (long long)m, (int)code_bits);
    st = tsq__kernel_resolve(&ctx->obj, where, kernel, m, code_bits, pw->bits, &k);
    if (st != TSQ_OK)
        return st;
    *chosen = k;
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

tsq_status tsq_lowbit_workspace_size(tsq_context *ctx, const tsq_packed_weights *pw,
                                     int64_t m, int32_t code_bits, int32_t kernel,
                                     uint64_t *bytes)
{
    static const char *where = "lowbit_workspace_size";
    tsq__lowbit_ws ws = {0}; /* filled by layout_ws; gcc -O3 cannot see it */
    int32_t k;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!pw || !bytes)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: %s is NULL", where, !pw ? "pw" : "bytes");
    if (m < 1 || code_bits < 1 || code_bits > 8)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: m = %lld, code_bits = %d (need m >= 1, "
                         "code_bits 1..8)", where, (long long)m, (int)code_bits);
    st = tsq__kernel_resolve(&ctx->obj, where, kernel, m, code_bits, pw->bits, &k);
    if (st == TSQ_OK)
        st = layout_ws(&ctx->obj, where, pw, m, code_bits, k,
                       useful_threads(ctx->threads, m, pw->k, pw->n), &ws);
    if (st != TSQ_OK)
        return st;
    *bytes = ws.total;
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

/* ---- execution ----------------------------------------------------------- */

typedef struct {
    const tsq__lowbit_call *call;
    const tsq_packed_weights *pw;
    const tsq_thresholds *th; /* NULL: plain accumulators */
    int32_t *acc;             /* M x N, when th is NULL */
    uint8_t *out;             /* M x N codes, when th is set */
    uint8_t *base;            /* aligned workspace */
    int64_t nitems, col_ranges, col_step;
} gemm_job;

/* The decoded panels of columns [c0, c1): all of them in the shared part,
 * or, streaming, the pair decoded now into this thread's scratch. */
static const int8_t *panels_for(const gemm_job *job, int64_t c0, int64_t c1, void *scratch)
{
    const tsq__lowbit_call *call = job->call;
    int64_t p0 = c0 / TSQ__PANEL_COLS, p1 = (c1 + TSQ__PANEL_COLS - 1) / TSQ__PANEL_COLS;
    if (!call->ws.streaming)
        return (const int8_t *)job->base + p0 * tsq__k4n(call->k) * 64;
    if (call->kernel == TSQ_KERNEL_VNNI)
        tsq__decode_panels_avx512(job->pw, p0, p1, scratch);
    else
        tsq__decode_panels_avx2(job->pw, p0, p1, scratch);
    return scratch;
}

/* One signature per operation, and one table of the kernels a resolved
 * TSQ_KERNEL_* value runs: the GEMM of a row block (rows of codes x times
 * columns [c0, c1) into acc) and the threshold epilogue. The table is
 * constant; which entry runs is decided once per call from the CPU
 * features the context detected at its creation. */
typedef void (*gemm_block_fn)(const gemm_job *job, const uint8_t *x, int64_t rows,
                              void *scratch, int64_t c0, int64_t c1, int32_t *acc,
                              int64_t ldacc);

static void block_ref(const gemm_job *job, const uint8_t *x, int64_t rows, void *scratch,
                      int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc)
{
    (void)scratch;
    tsq__gemm_ref(x, job->call->k, rows, job->call->k, (const int8_t *)job->base, job->pw->n,
                  c0, c1, acc, ldacc);
}

/* AVX2 and VNNI: over decoded 16-column panels (all decoded up front, or
 * two at a time when streaming). */
static void block_decoded(const gemm_job *job, const uint8_t *x, int64_t rows, void *scratch,
                          int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc)
{
    const tsq__lowbit_call *call = job->call;
    int64_t c, step = call->ws.streaming ? 2 * TSQ__PANEL_COLS : c1 - c0;
    for (c = c0; c < c1; c += step) {
        int64_t ce = c + step < c1 ? c + step : c1;
        const int8_t *dec = panels_for(job, c, ce, scratch);
        if (call->kernel == TSQ_KERNEL_VNNI)
            tsq__gemm_vnni(x, call->k, rows, call->k, dec, c, ce, acc, ldacc);
        else
            tsq__gemm_avx2(x, call->k, rows, call->k, dec,
                           tsq__max_code(call->code_bits) * tsq__max_weight(job->pw->bits), c,
                           ce, acc, ldacc);
    }
}

static void block_vpopcnt(const gemm_job *job, const uint8_t *x, int64_t rows, void *scratch,
                          int64_t c0, int64_t c1, int32_t *acc, int64_t ldacc)
{
    const tsq__lowbit_call *call = job->call;
    tsq__bitplanes_avx512(x, call->k, rows, call->k, call->code_bits, job->pw->kwords, scratch);
    tsq__gemm_vpopcnt(scratch, rows, call->code_bits, job->pw, c0, c1, acc, ldacc);
}

static const struct {
    gemm_block_fn gemm;
    tsq__thresholds_fn thresholds;
} kernel_table[] = {
    {block_ref, tsq__thresholds_apply_ref},          /* TSQ_KERNEL_AUTO: never resolved */
    {block_ref, tsq__thresholds_apply_ref},          /* TSQ_KERNEL_REF */
    {block_decoded, tsq__thresholds_apply_avx2},     /* TSQ_KERNEL_AVX2: AVX2 only */
    {block_decoded, tsq__thresholds_apply_avx512},   /* TSQ_KERNEL_VNNI */
    {block_vpopcnt, tsq__thresholds_apply_avx512},   /* TSQ_KERNEL_VPOPCNT */
};

/* One thread's share: items slot, slot + threads, ... */
static void gemm_task(void *arg, int64_t slot)
{
    const gemm_job *job = arg;
    const tsq__lowbit_call *call = job->call;
    int64_t n = job->pw->n, item;
    uint8_t *mine = job->base + call->ws.shared +
                    (uint64_t)slot * (call->ws.scratch + call->ws.block);
    int32_t *block = (int32_t *)(mine + call->ws.scratch);
    for (item = slot; item < job->nitems; item += call->threads) {
        int64_t r0 = item / job->col_ranges * call->ws.rows;
        int64_t rows = call->m - r0 < call->ws.rows ? call->m - r0 : call->ws.rows;
        int64_t c0 = item % job->col_ranges * job->col_step;
        int64_t c1 = c0 + job->col_step < n ? c0 + job->col_step : n;
        const uint8_t *x = call->x + r0 * call->k;
        if (c0 >= c1)
            continue;
        if (!job->th) {
            kernel_table[call->kernel].gemm(job, x, rows, mine, c0, c1, job->acc + r0 * n, n);
        } else {
            kernel_table[call->kernel].gemm(job, x, rows, mine, c0, c1, block, padded_cols(n));
            kernel_table[call->kernel].thresholds(job->th, block, padded_cols(n), rows, c0, c1,
                             job->out + r0 * n, n);
        }
    }
}

typedef struct {
    const tsq_packed_weights *pw;
    int8_t *dec;
    int64_t per_task, npanels;
    int avx512;
} decode_job;

static void decode_task(void *arg, int64_t t)
{
    const decode_job *d = arg;
    int64_t p0 = t * d->per_task, p1 = p0 + d->per_task < d->npanels ? p0 + d->per_task
                                                                      : d->npanels;
    if (p0 >= p1)
        return;
    if (d->avx512)
        tsq__decode_panels_avx512(d->pw, p0, p1, d->dec + p0 * tsq__k4n(d->pw->k) * 64);
    else
        tsq__decode_panels_avx2(d->pw, p0, p1, d->dec + p0 * tsq__k4n(d->pw->k) * 64);
}

/* Builds the shared decoded weights of the chosen kernel, if it has any. */
static void prepare_weights(const tsq__lowbit_call *call, const tsq_packed_weights *pw, uint8_t *base)
{
    decode_job d;
    if (call->kernel == TSQ_KERNEL_REF) {
        tsq__unpack_weights(pw, (int8_t *)base);
        return;
    }
    if ((call->kernel != TSQ_KERNEL_AVX2 && call->kernel != TSQ_KERNEL_VNNI) ||
        call->ws.streaming)
        return;
    d.pw = pw;
    d.dec = (int8_t *)base;
    d.npanels = tsq__panels(pw->n);
    d.per_task = (d.npanels + call->threads - 1) / call->threads;
    /* The AVX-512 decoder only with the VNNI kernel, so that a forced AVX2
     * kernel runs on AVX2 instructions alone. */
    d.avx512 = call->kernel == TSQ_KERNEL_VNNI;
    tsq__parallel_for(call->threads, call->threads, decode_task, &d);
}

void tsq__lowbit_execute(const tsq__lowbit_call *call, const tsq_packed_weights *pw,
                         const uint8_t *x, const tsq_thresholds *th, int32_t *acc, uint8_t *out,
                         void *workspace)
{
    gemm_job job;
    tsq__lowbit_call c = *call;
    int64_t row_blocks = (c.m + c.ws.rows - 1) / c.ws.rows;
    c.x = x;
    job.call = &c;
    job.pw = pw;
    job.th = th;
    job.acc = acc;
    job.out = out;
    job.base = (uint8_t *)round_up((uint64_t)(uintptr_t)workspace, WS_ALIGN);
    /* Enough row blocks keep every thread busy; otherwise the columns are
     * split as well (each part repacks its rows' bit planes: cheap). */
    job.col_ranges = row_blocks >= c.threads ? 1 : c.threads;
    job.col_step = padded_cols((pw->n + job.col_ranges - 1) / job.col_ranges);
    job.nitems = row_blocks * job.col_ranges;
    prepare_weights(&c, pw, job.base);
    tsq__parallel_for(c.threads, c.threads, gemm_task, &job);
}

static tsq_status run(tsq_context *ctx, const char *where, const tsq__lowbit_call *call,
                      const tsq_packed_weights *pw, const tsq_thresholds *th, int32_t *acc,
                      uint8_t *out, void *workspace)
{
    void *owned = NULL;
    if (!workspace) {
        workspace = owned = tsq__alloc(ctx, (size_t)call->ws.total);
        if (!owned)
            return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY,
                             "%s: out of memory for a %llu-byte workspace", where,
                             (unsigned long long)call->ws.total);
    }
    tsq__lowbit_execute(call, pw, call->x, th, acc, out, workspace);
    tsq__free(ctx, owned);
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}

tsq_status tsq_lowbit_gemm(tsq_context *ctx, const tsq_packed_weights *pw,
                           const tsq_tensor *codes, int32_t code_bits, int32_t kernel,
                           int32_t *acc, int64_t acc_count, void *workspace,
                           uint64_t workspace_bytes)
{
    static const char *where = "lowbit_gemm";
    tsq__lowbit_call call;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!acc)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: acc is NULL", where);
    st = check_call(ctx, where, pw, codes, code_bits, kernel, workspace, workspace_bytes, &call);
    if (st != TSQ_OK)
        return st;
    if ((double)acc_count < (double)call.m * (double)pw->n)
        return tsq__fail(&ctx->obj, TSQ_ERR_TOO_SMALL,
                         "%s: acc holds %lld values, the product has %lld x %lld", where,
                         (long long)acc_count, (long long)call.m, (long long)pw->n);
    return run(ctx, where, &call, pw, NULL, acc, NULL, workspace);
}

tsq_status tsq_lowbit_gemm_threshold(tsq_context *ctx, const tsq_packed_weights *pw,
                                     const tsq_tensor *codes, int32_t code_bits,
                                     const tsq_thresholds *th, int32_t kernel,
                                     tsq_tensor *out, void *workspace,
                                     uint64_t workspace_bytes)
{
    static const char *where = "lowbit_gemm_threshold";
    tsq__lowbit_call call;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!th)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: thresholds are NULL", where);
    st = tsq__expect_dtype(&ctx->obj, where, "out", out, TSQ_DTYPE_U8);
    if (st != TSQ_OK)
        return st;
    st = check_call(ctx, where, pw, codes, code_bits, kernel, workspace, workspace_bytes, &call);
    if (st != TSQ_OK)
        return st;
    if (th->channels != pw->n)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE,
                         "%s: thresholds have %lld channels, the weights %lld columns", where,
                         (long long)th->channels, (long long)pw->n);
    if ((double)out->numel != (double)call.m * (double)pw->n)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE,
                         "%s: out has %lld elements, expected %lld x %lld", where,
                         (long long)out->numel, (long long)call.m, (long long)pw->n);
    return run(ctx, where, &call, pw, th, NULL, out->data, workspace);
}

tsq_status tsq_thresholds_apply(tsq_context *ctx, const tsq_thresholds *th,
                                const int32_t *acc, int64_t acc_count, int64_t rows,
                                int32_t kernel, tsq_tensor *out)
{
    static const char *where = "thresholds_apply";
    int32_t chosen;
    tsq_status st;
    if (!ctx)
        return TSQ_ERR_NULL;
    if (!th || !acc)
        return tsq__fail(&ctx->obj, TSQ_ERR_NULL, "%s: %s is NULL", where,
                         !th ? "thresholds" : "acc");
    st = tsq__expect_dtype(&ctx->obj, where, "out", out, TSQ_DTYPE_U8);
    if (st != TSQ_OK)
        return st;
    if (rows < 1)
        return tsq__fail(&ctx->obj, TSQ_ERR_INVALID, "%s: rows = %lld, must be >= 1", where,
                         (long long)rows);
    if ((double)acc_count < (double)rows * (double)th->channels)
        return tsq__fail(&ctx->obj, TSQ_ERR_TOO_SMALL,
                         "%s: acc holds %lld values, %lld rows x %lld channels needed", where,
                         (long long)acc_count, (long long)rows, (long long)th->channels);
    if ((double)out->numel != (double)rows * (double)th->channels)
        return tsq__fail(&ctx->obj, TSQ_ERR_SHAPE,
                         "%s: out has %lld elements, expected %lld x %lld", where,
                         (long long)out->numel, (long long)rows, (long long)th->channels);
    st = tsq__kernel_resolve(&ctx->obj, where, kernel, rows, th->bits, 2, &chosen);
    if (st != TSQ_OK)
        return st;
    kernel_table[chosen].thresholds(th, acc, th->channels, rows, 0, th->channels, out->data,
                     th->channels);
    tsq__clear(&ctx->obj);
    return TSQ_OK;
}
