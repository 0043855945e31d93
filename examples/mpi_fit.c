/*
 * mpi_fit: TSQ step 2 (the low-bit weight regressor) spread over MPI ranks.
 *
 * The calibration rows of one convolution layer are sharded across the
 * ranks by image. Every rank runs the regressor's streaming protocol on its
 * own shard (tsq_regressor_begin / feed / end_pass) and, at every pass
 * boundary, the ranks add up the pass's sufficient statistics (a d x d Gram
 * matrix and d x C cross products, as doubles) with MPI_Allreduce, so that
 * each rank computes the same iterate as a fit over all the data. The
 * channels' solves in end_pass are shared too (tsq_regressor_set_share):
 * each rank solves a block of C / ranks channels, and the ranks exchange
 * their blocks' results with MPI_Allgatherv after every end_pass
 * (--no-share: every rank solves every channel, for comparison; both
 * print each rank's time in end_pass and a checksum of the result). Rank 0
 * then fits the whole data in one process (tsq_fit_transform) and compares:
 * the exit status is 0 only if the weights are identical, alpha and b agree
 * within --tol (relative; the sums are added in another order, so the last
 * bits may differ), and every rank holds bit-identical results.
 *
 * The data are synthetic and deterministic from --seed: random 2-bit input
 * codes per image (each image from its own random stream, so a rank
 * generates only its own images), a planted float layer (near-ternary
 * weights plus noise, per-channel offsets), P = X W + b + noise the step-1
 * pre-activations, Y their 2-bit codes.
 *
 * Build (from the repository root, after `make`):
 *   mpicc -std=c11 -O2 -Iinclude examples/mpi_fit.c build/openblas/libtsq.a \
 *       $(pkg-config --libs openblas) -lm -lpthread -ldl -o build/mpi_fit
 * Run:
 *   OPENBLAS_NUM_THREADS=1 mpirun -np 2 build/mpi_fit
 * tests/check_mpi_fit.sh does both (docs/embedding.md explains the protocol).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include <tsq.h>

typedef struct config {
    int64_t images;     /* calibration images, sharded across ranks */
    int64_t cin, size;  /* input channels, image height = width */
    int64_t cout;       /* output channels C */
    int64_t batch_rows; /* rows per tsq_regressor_feed call */
    int32_t rounds;     /* regressor rounds */
    double tol;         /* relative tolerance on alpha and b */
    int no_allreduce;   /* negative control: each rank fits its shard alone */
    int no_share;       /* every rank solves every channel */
    uint64_t seed;
} config;

/* The rows of one shard: X (rows x d codes), P (rows x C), Y (rows x C). */
typedef struct shard {
    int64_t rows, d, C;
    uint8_t *X;
    float *P;
    uint8_t *Y;
} shard;

typedef struct fit_result {
    int8_t *W; /* d x C */
    float *alpha, *b;
    double objective;
    double start_objective; /* of the best low-bit approximation of W_init */
    int32_t passes;
    double reduced;         /* doubles all-reduced (statistics) */
    double gathered;        /* doubles all-gathered (the shares' results) */
    double t_solve;         /* seconds in end_pass: the solves */
    double t_exchange;      /* seconds in the shares' exchange and import */
} fit_result;

/* The buffers of the passes' exchanges, grown as needed. */
typedef struct exchange_bufs {
    double *sums, *parts;
    int64_t sums_cap, parts_cap;
    int *counts, *displs; /* per rank, for MPI_Allgatherv */
} exchange_bufs;

enum { KH = 3, KW = 3, PAD = 1 };

static int rank_id; /* for messages only */

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "mpi_fit (rank %d): %s: %s\n", rank_id, what, msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

static void check_ctx(tsq_context *ctx, tsq_status st, const char *what)
{
    if (st != TSQ_OK)
        die(what, tsq_context_errmsg(ctx));
}

static void check_reg(tsq_regressor *reg, tsq_status st, const char *what)
{
    if (st != TSQ_OK)
        die(what, tsq_regressor_errmsg(reg));
}

static void check_q(tsq_quantizer *q, tsq_status st, const char *what)
{
    if (st != TSQ_OK)
        die(what, tsq_quantizer_errmsg(q));
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("malloc", "out of memory");
    return p;
}

/* ------------------------------------------------------------------ */
/* Deterministic random streams: stream k of seed s is independent of   */
/* the others, so image i is the same whichever rank generates it.      */
/* ------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static rng stream(uint64_t seed, uint64_t k)
{
    rng r;
    uint64_t s = seed ^ (k * 0xd1342543de82ef95ull);
    r.s = splitmix64(&s);
    return r;
}

static double uniform(rng *r)
{
    return (double)(splitmix64(&r->s) >> 11) * (1.0 / 9007199254740992.0);
}

static double normal(rng *r)
{
    double u = uniform(r), v = uniform(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* ------------------------------------------------------------------ */
/* Synthetic data                                                       */
/* ------------------------------------------------------------------ */

/* The planted float layer, W (d x C) and b (C): ternary weights times a
 * per-channel scale, plus Gaussian noise, so that the best ternary fit is
 * not exact. Identical on every rank (stream 0 of the seed). */
static void planted_layer(const config *cfg, int64_t d, float *W, float *b)
{
    rng r = stream(cfg->seed, 0);
    int64_t j, c;
    for (c = 0; c < cfg->cout; c++)
        b[c] = (float)(0.5 * normal(&r));
    for (j = 0; j < d; j++) {
        for (c = 0; c < cfg->cout; c++) {
            double u = uniform(&r), t = u < 0.3 ? -1.0 : u < 0.6 ? 1.0 : 0.0;
            W[j * cfg->cout + c] = (float)((t + 0.25 * normal(&r)) * 0.15);
        }
    }
}

/* The rows of images [lo, hi): their input codes (im2col by libtsq), the
 * pre-activations P = X W + b + noise and nothing else yet (Y comes from
 * the quantizer). Image i draws from stream 1 + i. */
static void make_shard(tsq_context *ctx, const config *cfg, int64_t lo, int64_t hi,
                       const float *W, const float *b, shard *s)
{
    int64_t n = hi - lo, hw = cfg->size * cfg->size, pix = cfg->cin * hw, i, k;
    int64_t d = cfg->cin * KH * KW, C = cfg->cout, r, j, c;
    memset(s, 0, sizeof *s);
    s->d = d;
    s->C = C;
    s->rows = n * hw; /* stride 1, padding 1: one row per pixel */
    s->X = xmalloc((size_t)(s->rows * d));
    s->P = xmalloc((size_t)(s->rows * C) * sizeof(float));
    s->Y = xmalloc((size_t)(s->rows * C));
    if (n <= 0)
        return;
    {
        const int64_t shape[4] = {n, cfg->cin, cfg->size, cfg->size};
        uint8_t *codes = xmalloc((size_t)(n * pix));
        double *noise = xmalloc((size_t)(n * hw * C) * sizeof(double));
        tsq_tensor *in = NULL, *rows = NULL;
        void *data = NULL;
        for (i = 0; i < n; i++) {
            rng g = stream(cfg->seed, 1 + (uint64_t)(lo + i));
            for (k = 0; k < pix; k++) {
                /* 2-bit codes, half of them zero (as after a sparse quantizer) */
                double u = uniform(&g);
                codes[i * pix + k] = (uint8_t)(u < 0.5 ? 0 : u < 0.75 ? 1 : u < 0.9 ? 2 : 3);
            }
            for (k = 0; k < hw * C; k++)
                noise[i * hw * C + k] = 0.1 * normal(&g);
        }
        check_ctx(ctx, tsq_tensor_wrap(ctx, TSQ_DTYPE_U8, 4, shape, codes, (uint64_t)(n * pix),
                                       &in), "tensor_wrap");
        check_ctx(ctx, tsq_regressor_im2col_rows(ctx, in, KH, KW, 1, 1, PAD, PAD, NULL, 0, &rows),
                  "im2col_rows");
        tsq_tensor_data(rows, &data);
        memcpy(s->X, data, (size_t)(s->rows * d));
        tsq_tensor_destroy(rows);
        tsq_tensor_destroy(in);
        free(codes);
        for (r = 0; r < s->rows; r++) {
            for (c = 0; c < C; c++) {
                double acc = b[c] + noise[r * C + c];
                for (j = 0; j < d; j++)
                    acc += (double)s->X[r * d + j] * W[j * C + c];
                s->P[r * C + c] = (float)acc;
            }
        }
        free(noise);
    }
}

static void free_shard(shard *s)
{
    free(s->X);
    free(s->P);
    free(s->Y);
    memset(s, 0, sizeof *s);
}

/* Tensors over the caller's memory (the caller keeps it). */
static tsq_tensor *wrap(tsq_context *ctx, int32_t dtype, int32_t ndim, const int64_t *shape,
                        void *p)
{
    uint64_t bytes = dtype == TSQ_DTYPE_F32 ? 4 : 1;
    tsq_tensor *t = NULL;
    int32_t i;
    for (i = 0; i < ndim; i++)
        bytes *= (uint64_t)shape[i];
    check_ctx(ctx, tsq_tensor_wrap(ctx, dtype, ndim, shape, p, bytes, &t), "tensor_wrap");
    return t;
}

static tsq_tensor *wrap2d(tsq_context *ctx, int32_t dtype, int64_t rows, int64_t cols, void *p)
{
    const int64_t shape[2] = {rows, cols};
    return wrap(ctx, dtype, 2, shape, p);
}

static tsq_tensor *wrap1d(tsq_context *ctx, int32_t dtype, int64_t n, void *p)
{
    return wrap(ctx, dtype, 1, &n, p);
}

/* Y = the quantizer's codes of P. */
static void encode_shard(tsq_context *ctx, tsq_quantizer *q, shard *s)
{
    tsq_tensor *p, *y;
    if (s->rows == 0)
        return;
    p = wrap2d(ctx, TSQ_DTYPE_F32, s->rows, s->C, s->P);
    y = wrap2d(ctx, TSQ_DTYPE_U8, s->rows, s->C, s->Y);
    check_q(q, tsq_quantizer_encode(q, p, y), "quantizer_encode");
    tsq_tensor_destroy(p);
    tsq_tensor_destroy(y);
}

/* ------------------------------------------------------------------ */
/* The output quantizer: fitted once (rank 0), the same on every rank   */
/* ------------------------------------------------------------------ */

static tsq_quantizer *shared_quantizer(tsq_context *ctx, const shard *mine, MPI_Comm comm)
{
    tsq_quantizer *q = NULL;
    float params[2] = {0, 0}; /* eps, delta */
    check_ctx(ctx, tsq_quantizer_create(ctx, 2, 0, &q), "quantizer_create");
    if (rank_id == 0) {
        /* Step 1's quantizer, fitted (joint eps) on rank 0's pre-activations. */
        tsq_tensor *p = wrap2d(ctx, TSQ_DTYPE_F32, mine->rows, mine->C, mine->P);
        check_q(q, tsq_quantizer_set_option(q, TSQ_QUANTIZER_EPS_MODE, TSQ_EPS_JOINT),
                "quantizer eps mode");
        check_q(q, tsq_learn_codes(q, p, NULL, NULL, NULL), "learn_codes");
        check_q(q, tsq_quantizer_get_channel(q, 0, &params[0], &params[1]), "get_channel");
        tsq_tensor_destroy(p);
    }
    /* The output levels must be identical on every rank. */
    MPI_Bcast(params, 2, MPI_FLOAT, 0, comm);
    check_q(q, tsq_quantizer_set_channel(q, 0, params[0], params[1]), "set_channel");
    return q;
}

/* ------------------------------------------------------------------ */
/* Fits                                                                 */
/* ------------------------------------------------------------------ */

static tsq_regressor *make_regressor(tsq_context *ctx, const config *cfg, tsq_quantizer *q)
{
    tsq_regressor *reg = NULL;
    check_ctx(ctx, tsq_regressor_create(ctx, &reg), "regressor_create");
    check_reg(reg, tsq_regressor_set_option(reg, TSQ_REGRESSOR_ROUNDS, cfg->rounds), "rounds");
    check_reg(reg, tsq_regressor_set_quantizer(reg, q), "set_quantizer");
    return reg;
}

static void alloc_result(fit_result *r, int64_t d, int64_t C)
{
    memset(r, 0, sizeof *r);
    r->W = xmalloc((size_t)(d * C));
    r->alpha = xmalloc((size_t)C * sizeof(float));
    r->b = xmalloc((size_t)C * sizeof(float));
}

static void free_result(fit_result *r)
{
    free(r->W);
    free(r->alpha);
    free(r->b);
}

static void read_result(tsq_context *ctx, tsq_regressor *reg, int64_t d, int64_t C,
                        fit_result *r)
{
    tsq_tensor *w = wrap2d(ctx, TSQ_DTYPE_I8, d, C, r->W);
    tsq_tensor *a = wrap1d(ctx, TSQ_DTYPE_F32, C, r->alpha);
    tsq_tensor *b = wrap1d(ctx, TSQ_DTYPE_F32, C, r->b);
    check_reg(reg, tsq_regressor_result(reg, w, a, b, &r->objective), "regressor_result");
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(a);
    tsq_tensor_destroy(b);
}

/* Feeds this rank's rows in batches of cfg->batch_rows. P goes with every
 * batch of the first pass (begin had with_preact = 1), later passes may
 * omit it. */
static void feed_shard(tsq_context *ctx, tsq_regressor *reg, const config *cfg, shard *s,
                       int first_pass)
{
    int64_t start;
    for (start = 0; start < s->rows; start += cfg->batch_rows) {
        int64_t n = s->rows - start < cfg->batch_rows ? s->rows - start : cfg->batch_rows;
        tsq_tensor *x = wrap2d(ctx, TSQ_DTYPE_U8, n, s->d, s->X + start * s->d);
        tsq_tensor *y = wrap2d(ctx, TSQ_DTYPE_U8, n, s->C, s->Y + start * s->C);
        tsq_tensor *p = first_pass ? wrap2d(ctx, TSQ_DTYPE_F32, n, s->C, s->P + start * s->C)
                                   : NULL;
        check_reg(reg, tsq_regressor_feed(reg, x, y, p), "regressor_feed");
        tsq_tensor_destroy(x);
        tsq_tensor_destroy(y);
        tsq_tensor_destroy(p);
    }
}

static void grow(double **buf, int64_t *cap, int64_t count)
{
    if (count <= *cap)
        return;
    free(*buf);
    *cap = count;
    *buf = xmalloc((size_t)count * sizeof(double));
}

/* After end_pass with shares: every rank's part of the results (its
 * channels'), gathered in rank order on every rank and imported there,
 * which completes the pass and says whether the fit is done. */
static int32_t exchange_shares(tsq_regressor *reg, int nranks, MPI_Comm comm,
                               exchange_bufs *x, fit_result *out)
{
    int64_t total = 0, size = 0;
    int32_t done = 0;
    int r;
    for (r = 0; r < nranks; r++) { /* every part's size, known on every rank */
        check_reg(reg, tsq_regressor_share_size(reg, r, &size), "share_size");
        if (total + size > INT32_MAX)
            die("MPI_Allgatherv", "results larger than 2^31 doubles");
        x->counts[r] = (int)size;
        x->displs[r] = (int)total;
        total += size;
    }
    grow(&x->parts, &x->parts_cap, total);
    check_reg(reg, tsq_regressor_share_export(reg, x->parts + x->displs[rank_id],
                                              x->counts[rank_id]), "share_export");
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x->parts, x->counts, x->displs,
                   MPI_DOUBLE, comm);
    check_reg(reg, tsq_regressor_share_import(reg, x->parts, total, &done), "share_import");
    out->gathered += (double)total;
    return done;
}

/* One pass of this rank: feed the shard, then (unless cfg->no_allreduce,
 * the negative control) replace the pass's sums by their sum over all
 * ranks, end the pass, and with shares exchange the solves' results. */
static int32_t sharded_pass(tsq_context *ctx, tsq_regressor *reg, const config *cfg, shard *s,
                            int nranks, MPI_Comm comm, exchange_bufs *x, fit_result *out)
{
    int64_t count = 0;
    int32_t done = 0;
    double t0;
    feed_shard(ctx, reg, cfg, s, out->passes == 0);
    if (!cfg->no_allreduce) {
        check_reg(reg, tsq_regressor_stats_size(reg, &count), "stats_size");
        grow(&x->sums, &x->sums_cap, count);
        check_reg(reg, tsq_regressor_stats_export(reg, x->sums, count), "stats_export");
        /* count is the same on every rank: it depends only on d, C, the
         * options and the pass. */
        if (count > INT32_MAX)
            die("MPI_Allreduce", "statistics larger than 2^31 doubles");
        MPI_Allreduce(MPI_IN_PLACE, x->sums, (int)count, MPI_DOUBLE, MPI_SUM, comm);
        check_reg(reg, tsq_regressor_stats_import(reg, x->sums, count, TSQ_STATS_REPLACE),
                  "stats_import");
        out->reduced += (double)count;
    }
    t0 = MPI_Wtime();
    check_reg(reg, tsq_regressor_end_pass(reg, &done), "end_pass");
    out->t_solve += MPI_Wtime() - t0;
    if (!cfg->no_share) { /* end_pass left done to the import */
        t0 = MPI_Wtime();
        done = exchange_shares(reg, nranks, comm, x, out);
        out->t_exchange += MPI_Wtime() - t0;
    }
    return done;
}

/* The sharded fit. What must be identical on every rank: d, C, W_init,
 * with_preact, the regressor's options and output quantizer (all set the
 * same way above), and the summed statistics imported at every pass; then
 * every rank computes the same iterate and they all finish together. */
static void distributed_fit(tsq_context *ctx, const config *cfg, shard *s, tsq_quantizer *q,
                            const float *W_init, int nranks, MPI_Comm comm, fit_result *out)
{
    tsq_regressor *reg = make_regressor(ctx, cfg, q);
    tsq_tensor *w0 = wrap2d(ctx, TSQ_DTYPE_F32, s->d, s->C, (void *)W_init);
    exchange_bufs x;
    int32_t done = 0, all_done = 0;
    memset(&x, 0, sizeof x);
    x.counts = xmalloc((size_t)nranks * sizeof(int));
    x.displs = xmalloc((size_t)nranks * sizeof(int));
    /* This rank solves channels floor(rank C / ranks) .. floor((rank + 1) C / ranks) - 1. */
    if (!cfg->no_share)
        check_reg(reg, tsq_regressor_set_share(reg, rank_id, nranks), "set_share");
    check_reg(reg, tsq_regressor_begin(reg, s->d, s->C, w0, 1), "regressor_begin");
    while (!all_done) {
        int32_t any_done = 0;
        if (!done) {
            done = sharded_pass(ctx, reg, cfg, s, nranks, comm, &x, out);
            out->passes++;
        }
        /* With the same sums every rank computes the same iterate, so all
         * finish at the same pass; a rank that finishes alone means the
         * ranks were not set up identically (or the control run). */
        MPI_Allreduce(&done, &all_done, 1, MPI_INT32_T, MPI_MIN, comm);
        MPI_Allreduce(&done, &any_done, 1, MPI_INT32_T, MPI_MAX, comm);
        if (any_done != all_done && !cfg->no_allreduce)
            die("end_pass", "the ranks disagree on the end of the fit");
    }
    read_result(ctx, reg, s->d, s->C, out);
    {
        double hist[256];
        int32_t n = 0;
        if (tsq_regressor_history(reg, TSQ_HISTORY_BEST, hist, 256, &n) == TSQ_OK && n > 0)
            out->start_objective = hist[0];
    }
    free(x.sums);
    free(x.parts);
    free(x.counts);
    free(x.displs);
    tsq_tensor_destroy(w0);
    tsq_regressor_destroy(reg);
}

/* The reference: one process, all the rows, one tsq_fit_transform call. */
static void single_fit(tsq_context *ctx, const config *cfg, shard *all, tsq_quantizer *q,
                       const float *W_init, fit_result *out)
{
    tsq_regressor *reg = make_regressor(ctx, cfg, q);
    tsq_tensor *x = wrap2d(ctx, TSQ_DTYPE_U8, all->rows, all->d, all->X);
    tsq_tensor *y = wrap2d(ctx, TSQ_DTYPE_U8, all->rows, all->C, all->Y);
    tsq_tensor *p = wrap2d(ctx, TSQ_DTYPE_F32, all->rows, all->C, all->P);
    tsq_tensor *w0 = wrap2d(ctx, TSQ_DTYPE_F32, all->d, all->C, (void *)W_init);
    tsq_tensor *w = wrap2d(ctx, TSQ_DTYPE_I8, all->d, all->C, out->W);
    tsq_tensor *a = wrap1d(ctx, TSQ_DTYPE_F32, all->C, out->alpha);
    tsq_tensor *b = wrap1d(ctx, TSQ_DTYPE_F32, all->C, out->b);
    check_reg(reg, tsq_fit_transform(reg, x, y, w0, p, w, a, b, &out->objective),
              "fit_transform");
    tsq_tensor_destroy(x);
    tsq_tensor_destroy(y);
    tsq_tensor_destroy(p);
    tsq_tensor_destroy(w0);
    tsq_tensor_destroy(w);
    tsq_tensor_destroy(a);
    tsq_tensor_destroy(b);
    tsq_regressor_destroy(reg);
}

/* ------------------------------------------------------------------ */
/* Comparison                                                           */
/* ------------------------------------------------------------------ */

/* FNV-1a over the result's bytes: equal on every rank iff bit-identical
 * (up to hash collisions, which a mismatch would have to hit by chance). */
static uint64_t result_hash(const fit_result *r, int64_t d, int64_t C)
{
    uint64_t h = 1469598103934665603ull;
    const unsigned char *parts[3] = {(const unsigned char *)r->W,
                                     (const unsigned char *)r->alpha,
                                     (const unsigned char *)r->b};
    const size_t sizes[3] = {(size_t)(d * C), (size_t)C * 4, (size_t)C * 4};
    int k;
    size_t i;
    for (k = 0; k < 3; k++)
        for (i = 0; i < sizes[k]; i++)
            h = (h ^ parts[k][i]) * 1099511628211ull;
    return h;
}

/* Rank 0 prints every rank's time in end_pass (the channels' solves) and
 * in the shares' exchange. */
static void print_timings(const config *cfg, const fit_result *r, int nranks)
{
    double mine[3] = {r->t_solve, r->t_exchange, r->gathered}, *all = NULL;
    int k;
    if (rank_id == 0)
        all = xmalloc((size_t)nranks * sizeof mine);
    MPI_Gather(mine, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    for (k = 0; rank_id == 0 && k < nranks; k++) {
        if (cfg->no_share)
            printf("rank %d: end_pass %.3fs solving all %lld channels (--no-share)\n", k,
                   all[3 * k], (long long)cfg->cout);
        else
            printf("rank %d: end_pass %.3fs solving its %lld of %lld channels, exchange %.3fs "
                   "(%.0f doubles gathered)\n", k, all[3 * k],
                   (long long)(cfg->cout * (k + 1) / nranks - cfg->cout * k / nranks),
                   (long long)cfg->cout, all[3 * k + 1], all[3 * k + 2]);
    }
    free(all);
}

/* Rank 0: prints the comparison; returns 1 if they agree. */
static int compare(const config *cfg, const fit_result *dist, const fit_result *one, int64_t d,
                   int64_t C)
{
    int64_t i, wdiff = 0, nonzero = 0, abits = 0, bbits = 0;
    double amax = 0, bmax = 0;
    int ok;
    for (i = 0; i < d * C; i++) {
        wdiff += dist->W[i] != one->W[i];
        nonzero += dist->W[i] != 0;
    }
    for (i = 0; i < C; i++) {
        double ra = fabs((double)dist->alpha[i] - one->alpha[i]) / fabs((double)one->alpha[i]);
        double rb = fabs((double)dist->b[i] - one->b[i]) /
                    (fabs((double)one->b[i]) + fabs((double)one->alpha[i]));
        amax = ra > amax ? ra : amax;
        bmax = rb > bmax ? rb : bmax;
        abits += memcmp(&dist->alpha[i], &one->alpha[i], sizeof(float)) != 0;
        bbits += memcmp(&dist->b[i], &one->b[i], sizeof(float)) != 0;
    }
    printf("weights: %lld of %lld differ (%lld nonzero ternary weights)\n", (long long)wdiff,
           (long long)(d * C), (long long)nonzero);
    printf("alpha:   max relative difference %.3g (%lld of %lld not bit-identical)\n", amax,
           (long long)abits, (long long)C);
    printf("b:       max difference %.3g of |b| + alpha (%lld of %lld not bit-identical)\n",
           bmax, (long long)bbits, (long long)C);
    printf("objective ||y - Q(alpha X w + b)||^2: sharded %.6g, single process %.6g "
           "(start: %.6g)\n", dist->objective, one->objective, dist->start_objective);
    ok = wdiff == 0 && amax <= cfg->tol && bmax <= cfg->tol &&
         fabs(dist->objective - one->objective) <= cfg->tol * (fabs(one->objective) + 1);
    printf("%s: sharded fit %s the single-process fit (tolerance %.1g)\n", ok ? "PASS" : "FAIL",
           ok ? "equals" : "DIFFERS FROM", cfg->tol);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Command line and main                                                */
/* ------------------------------------------------------------------ */

static void usage(void)
{
    printf("usage: mpirun -np R mpi_fit [options]\n"
           "  --images N   calibration images, sharded by image (default 256)\n"
           "  --cin N      input channels (default 8; d = 9 cin)\n"
           "  --size N     image height and width (default 10)\n"
           "  --cout N     output channels (default 16)\n"
           "  --rounds N   regressor rounds (default 10)\n"
           "  --batch N    rows per feed call (default 1000)\n"
           "  --tol X      relative tolerance on alpha and b (default 1e-5)\n"
           "  --seed N     data seed (default 1)\n"
           "  --no-share   every rank solves every channel (default: each solves\n"
           "               C / ranks of them and the ranks exchange the results)\n"
           "  --no-allreduce  negative control: skip the sums, so that each rank fits\n"
           "               its own shard alone (implies --no-share); the comparison\n"
           "               must then fail (exit 1)\n");
}

static int parse_args(config *cfg, int argc, char **argv)
{
    int i;
    memset(cfg, 0, sizeof *cfg);
    cfg->images = 256;
    cfg->cin = 8;
    cfg->size = 10;
    cfg->cout = 16;
    cfg->rounds = 10;
    cfg->batch_rows = 1000;
    cfg->tol = 1e-5;
    cfg->seed = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (rank_id == 0)
                usage();
            return 1;
        }
        if (strcmp(a, "--no-allreduce") == 0) {
            /* ranks with different sums take different decisions: no
             * exchange between them could line up */
            cfg->no_allreduce = cfg->no_share = 1;
            continue;
        }
        if (strcmp(a, "--no-share") == 0) {
            cfg->no_share = 1;
            continue;
        }
        if (!v) {
            if (rank_id == 0)
                fprintf(stderr, "mpi_fit: %s needs a value (see --help)\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--images") == 0) cfg->images = atoll(v);
        else if (strcmp(a, "--cin") == 0) cfg->cin = atoll(v);
        else if (strcmp(a, "--size") == 0) cfg->size = atoll(v);
        else if (strcmp(a, "--cout") == 0) cfg->cout = atoll(v);
        else if (strcmp(a, "--rounds") == 0) cfg->rounds = atoi(v);
        else if (strcmp(a, "--batch") == 0) cfg->batch_rows = atoll(v);
        else if (strcmp(a, "--tol") == 0) cfg->tol = atof(v);
        else if (strcmp(a, "--seed") == 0) cfg->seed = strtoull(v, NULL, 10);
        else {
            if (rank_id == 0)
                fprintf(stderr, "mpi_fit: unknown option %s (see --help)\n", a);
            return -1;
        }
    }
    if (cfg->images < 1 || cfg->cin < 1 || cfg->size < 1 || cfg->cout < 1 || cfg->rounds < 0 ||
        cfg->batch_rows < 1 || !(cfg->tol >= 0) || cfg->images * cfg->size * cfg->size > (1 << 24)) {
        if (rank_id == 0)
            fprintf(stderr, "mpi_fit: sizes must be positive (and images * size^2 <= 2^24)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    config cfg;
    tsq_context *ctx = NULL;
    tsq_quantizer *q = NULL;
    shard mine;
    fit_result dist;
    float *W = NULL, *b = NULL;
    int nranks = 1, ok = 1, parsed;
    int64_t d, lo, hi;
    double t0, t_dist;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_id);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    parsed = parse_args(&cfg, argc, argv);
    if (parsed != 0) {
        MPI_Finalize();
        return parsed > 0 ? 0 : 2;
    }
    if (cfg.images < nranks) {
        /* every rank needs rows; rank 0 also fits the output quantizer on its own */
        if (rank_id == 0)
            fprintf(stderr, "mpi_fit: %lld images for %d ranks: give at least one per rank\n",
                    (long long)cfg.images, nranks);
        MPI_Finalize();
        return 2;
    }
    if (tsq_context_create(&ctx) != TSQ_OK)
        die("context_create", "out of memory");
    check_ctx(ctx, tsq_context_set_option(ctx, TSQ_CONTEXT_THREADS, 1), "threads");

    d = cfg.cin * KH * KW;
    W = xmalloc((size_t)(d * cfg.cout) * sizeof(float));
    b = xmalloc((size_t)cfg.cout * sizeof(float));
    planted_layer(&cfg, d, W, b);

    /* This rank's images: a contiguous block. */
    lo = cfg.images * rank_id / nranks;
    hi = cfg.images * (rank_id + 1) / nranks;
    make_shard(ctx, &cfg, lo, hi, W, b, &mine);
    q = shared_quantizer(ctx, &mine, MPI_COMM_WORLD);
    encode_shard(ctx, q, &mine);
    if (rank_id == 0) {
        float eps = 0, delta = 0;
        tsq_quantizer_get_channel(q, 0, &eps, &delta);
        printf("mpi_fit: %d ranks, %lld images of %lldx%lldx%lld, conv 3x3 -> %lld channels: "
               "%lld rows x d = %lld, 2-bit outputs (eps %.4f, delta %.4f), %d rounds\n",
               nranks, (long long)cfg.images, (long long)cfg.cin, (long long)cfg.size,
               (long long)cfg.size, (long long)cfg.cout,
               (long long)(cfg.images * cfg.size * cfg.size), (long long)d, eps, delta,
               cfg.rounds);
    }
    {
        int64_t rows = mine.rows, *all = rank_id == 0 ? xmalloc((size_t)nranks * 8) : NULL;
        int r;
        MPI_Gather(&rows, 1, MPI_INT64_T, all, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
        for (r = 0; rank_id == 0 && r < nranks; r++)
            printf("  rank %d: images %lld..%lld, %lld rows\n", r,
                   (long long)(cfg.images * r / nranks),
                   (long long)(cfg.images * (r + 1) / nranks) - 1, (long long)all[r]);
        free(all);
    }

    /* The sharded fit, on every rank. W_init (the float layer) is the same
     * everywhere because it comes from the same seed. */
    alloc_result(&dist, d, cfg.cout);
    t0 = MPI_Wtime();
    distributed_fit(ctx, &cfg, &mine, q, W, nranks, MPI_COMM_WORLD, &dist);
    t_dist = MPI_Wtime() - t0;
    print_timings(&cfg, &dist, nranks);

    /* Every rank must hold the same result, bit for bit. */
    {
        uint64_t h = result_hash(&dist, d, cfg.cout), *all = NULL;
        int r;
        if (rank_id == 0)
            all = xmalloc((size_t)nranks * sizeof *all);
        MPI_Gather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
        if (rank_id == 0) {
            int same = 1;
            for (r = 1; r < nranks; r++)
                same &= all[r] == all[0];
            printf("sharded fit: %d passes, %.0f doubles (%.1f KiB) all-reduced per rank, "
                   "%.2fs; results on all %d ranks %s\n",
                   dist.passes, dist.reduced, dist.reduced * 8 / 1024, t_dist, nranks,
                   same ? "bit-identical" : "DIFFER");
            printf("checksum of w, alpha, b: %016llx\n", (unsigned long long)all[0]);
            ok &= same;
            free(all);
        }
    }

    /* Rank 0: the single-process reference over all the images. */
    if (rank_id == 0) {
        shard all;
        fit_result one;
        double t1;
        make_shard(ctx, &cfg, 0, cfg.images, W, b, &all);
        encode_shard(ctx, q, &all);
        alloc_result(&one, d, cfg.cout);
        t1 = MPI_Wtime();
        single_fit(ctx, &cfg, &all, q, W, &one);
        printf("single-process fit: %lld rows, %.2fs\n", (long long)all.rows, MPI_Wtime() - t1);
        ok &= compare(&cfg, &dist, &one, d, cfg.cout);
        free_result(&one);
        free_shard(&all);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);

    free_result(&dist);
    free_shard(&mine);
    free(W);
    free(b);
    tsq_quantizer_destroy(q);
    tsq_context_destroy(ctx);
    MPI_Finalize();
    return ok ? 0 : 1;
}
