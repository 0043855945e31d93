/*
 * The step-2 regressor's fit state, shared by the files that drive a fit
 * over passes of data (regressor_options.c, regressor_begin.c,
 * regressor_feed.c, regressor_products.c, regressor_stats.c, regressor_pass.c,
 * regressor_polish_pass.c, regressor_share.c, regressor_result.c). The
 * solver (regressor_solve.c, regressor_levels.c, lowbit_init.c) sees only regressor_internal.h and never this state, so
 * the dependency runs one way: drivers -> solver.
 */
#ifndef TSQ_REGRESSOR_FIT_H
#define TSQ_REGRESSOR_FIT_H

#include "regressor_internal.h"

/* Where the start target z0 (and the linear loss's target) comes from. */
enum { TARGET_PREACT = 1, TARGET_XW = 2, TARGET_CODES = 3 };
enum { FIT_RUNNING = 1, FIT_DONE = 2 };
enum { STATS_EXPORT = 0 };
/* The shares' exchange after an end_pass (regressor_share.c): none due;
 * due, with nothing to carry (the pass solved nothing per channel); the
 * iterate of the start or of a round; the polish's candidates. */
enum { EXCHANGE_NONE = 0, EXCHANGE_EMPTY, EXCHANGE_ITERATE, EXCHANGE_CANDIDATES };
/* The polish's passes (regressor_polish.c): the histogram, its candidates,
 * the windows, their candidates, then compass steps. */
enum { POLISH_HIST = 1, POLISH_VERIFY, POLISH_WINDOW, POLISH_WVERIFY, POLISH_COMPASS };

typedef struct fit_options {
    int32_t loss, offset, rounds, linear_rounds, sweeps, batch_rows, polish, restarts;
    double lambda0, growth, tol, margin;
    tsq__alphabet alphabet;
} fit_options;

/* Everything one fit needs. `work` holds the statistics and scratch and is
 * freed when the fit is done; `keep` holds what stays queryable. */
typedef struct fit_state {
    int64_t d, C;
    fit_options opt;
    int32_t target, with_preact, status;
    int32_t pass;       /* 0: statistics; k >= 1: evaluates iterate k-1 */
    int32_t zpass;      /* the current pass takes round `pass`'s z-step */
    double lambda;      /* lambda of that z-step */
    int32_t polishing;  /* polish passes begun (0: still in the rounds) */
    int32_t pstage;     /* the polish pass's kind: POLISH_HIST .. POLISH_COMPASS */
    int32_t chunk;      /* rows per block of work */
    int32_t threads;
    /* The channels this regressor solves: share `share` of `shares`
     * (tsq_regressor_set_share), channels [c0, c1). With shares > 1 each
     * end_pass leaves an exchange due (`exchange`), and the import takes
     * the decisions that need every channel; `exchange_done` is what it
     * reports when the end_pass already took them. */
    int32_t share, shares;
    int64_t c0, c1;
    int32_t exchange, exchange_done;
    void *work, *keep;
    /* work: statistics of pass 0 */
    tsq__outq *q;       /* C channels' quantizers (when one is set) */
    double *gram, *colsum, *g0, *z0sum, *z0sq;
    double *ysum;       /* sum of delta Y per channel: shifts z0 = X W_init */
    double rows0;
    float *w_init;      /* d x C, or NULL */
    /* work: sums of the current pass */
    double rows;
    double *obj, *g, *zsum, *zsq, *zcost;
    double *lin;        /* per-channel linear objectives (linear_total's scratch) */
    /* work: the iterate (w is C x d, channel-major) */
    int8_t *w;
    double *alpha, *b;
    float *af, *bf, *wf; /* alpha, b as evaluated; w as a d x C float matrix */
    float *zlo, *zhi;   /* the z-step's bins per channel (tsq__zstep_bins) */
    float *qeps, *qinv, *qtop, *qdelta2; /* the quantizers as float arrays */
    int32_t nbins;      /* 1 + the largest top code over the channels */
    uint8_t *yc;        /* a block of f32 codes as u8 */
    /* work: scratch */
    double *t, *r, *part;
    int8_t *moved;      /* per channel: the last round moved it (see stalled) */
    /* work: the polish (regressor_polish.c) */
    double *hist;            /* C x nbins x hbins: pass 1's histograms */
    float *hlo, *hscale;     /* C: the histogram's bins of u */
    double *ubar;            /* C: mean u of the fixed w */
    double *ph, *pg;         /* C: the compass steps (alpha relative, b in deltas) */
    float *wlo, *wscale, *wedge; /* C x nw, C, C x nw: pass 3's windows */
    int8_t *wused;           /* C x nw: window m has a threshold */
    int32_t nw, fb;          /* windows per channel, bins per window (0: none) */
    double *hscratch;        /* C x 4 hbins: the searches' scratch */
    int32_t hbins;
    double *cand;            /* TSQ__POLISH_CAND x C: pass 2's sums */
    double *cad, *cbd;       /* TSQ__POLISH_CAND x C: the candidates */
    float *caf, *cbf;        /* the same as evaluated */
    int8_t *w_try;      /* per channel: the w of a restarted descent */
    /* work: the blocked sweeps (regressor_sweep.c) */
    double *tt, *wd, *dw;          /* d x C, d x C, 64 x C */
    double *alpha_try, *sbest, *alpha_prev, *b_prev; /* C each */
    int64_t *changes, *count, *tries; /* C each */
    int8_t *active;                /* C */
    double *wmw;                   /* C: w^T M w of the iterate (linear objectives) */
    int32_t r_valid;               /* r holds M w of the current w */
    float *xf, *vf, *zf, *gf;
    double *xd, *td; /* pass 0 works in double: rows of X, of z0 */
    /* The products u = X w of every row, kept across passes when one feed
     * brings all the rows every pass (tsq_fit_transform) and they are
     * exact in float (u8 X, d maxcode max|S| <= 2^24): a pass then only
     * updates the channels whose w changed (regressor_feed.c). */
    void *cache;        /* the allocation below (NULL: no cache) */
    float *vcache;      /* vrows x C */
    int8_t *wcache;     /* C x d: the w that vcache holds */
    int32_t *dj, *dc;   /* this pass's sparse changes: row j of channel c .. */
    float *dv;          /* .. changes by dv */
    int32_t *dense;     /* channels recomputed by a product */
    float *wg;          /* d x ndense: their w, gathered */
    int64_t vrows, ndelta, ndense;
    int32_t vvalid;
    /* Integer products on CPUs with AVX-512 VNNI (u8 codes times int8, in
     * int32: exact, so the same values as the float path) */
    int32_t vnni;       /* the CPU has it */
    int32_t int_xw;     /* u = X w by it (u8 X with codes, the fit's own w) */
    int32_t avx512;     /* X^T z by tsq__reg_xtz_rows_avx512 */
    uint8_t *xt;        /* d x chunk: a piece of X transposed (pass 0) */
    int8_t *dec;        /* the right operand in the kernel's panels .. */
    int64_t decy;       /* .. and from here, pass 0's Y */
    int32_t *accy;      /* d x C: pass 0's X^T Y */
    /* keep: the best iterate per channel and the history */
    int8_t *best_w;
    double *best_alpha, *best_b, *best_obj;
    double *h_obj, *h_best, *h_relax, *h_lambda;
    int32_t h_count;
} fit_state;

struct tsq_regressor {
    tsq__object obj;
    fit_options opt;
    int32_t weight_bits;      /* 0 while a custom alphabet is in use */
    int32_t q_set;            /* an output quantizer was given */
    int64_t q_channels;       /* 0: per tensor (q_tensor) */
    tsq__outq q_tensor;
    tsq__outq *q_channel;     /* q_channels entries */
    int32_t share, shares;    /* tsq_regressor_set_share: read by begin */
    fit_state *fit;
};

/* Partial sums per block of rows: obj, zsum, zsq, zcost; a polish pass
 * has TSQ__POLISH_CAND series. PART_STRIDE series are reserved per block. */
#define PART_SERIES 4
#define PART_STRIDE TSQ__POLISH_CAND
#define MAX_BLOCKS 64
/* Pass 0 converts rows to double this many at a time. */
#define DOUBLE_ROWS 256
/* Elementwise work is spread over threads only in shares of at least this
 * many elements: a fork-join costs a thread start and, on a busy machine,
 * a wait for a scheduler slot, which finer shares do not repay. */
#define MIN_SHARE 131072
/* Levels of the context's log callback (TSQ_CONTEXT_LOG_LEVEL): a line per
 * pass at info, the per-round objectives at debug. */
#define REG_LOG_INFO 3
#define REG_LOG_DEBUG 4


static inline int fit_running(const tsq_regressor *reg)
{
    return reg->fit && reg->fit->status == FIT_RUNNING;
}

static inline size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* The rows a feed brings, as raw pointers (already validated). */
typedef struct batch {
    const void *x;
    int32_t xdt;
    const void *y;
    int32_t ydt;
    const float *p;
    int64_t n;
} batch;

/* Threads for `work` elements of cheap work (see MIN_SHARE). */
static inline int64_t threads_for(const fit_state *f, int64_t work)
{
    int64_t t = work / MIN_SHARE;
    return t < 1 ? 1 : t < f->threads ? t : f->threads;
}

/* With the quantized loss, z0 = X W_init + beta, beta matching the mean of
 * the codes' levels: W_init carries no offset, the layer may have one. */
static inline int shifts_xw(const fit_state *f)
{
    return f->target == TARGET_XW && f->opt.loss == TSQ_LOSS_QUANTIZED && f->opt.offset;
}

/* Done, and on every share: no exchange is due. */
static inline int fit_done(const tsq_regressor *reg)
{
    return reg->fit && reg->fit->status == FIT_DONE && !reg->fit->exchange;
}

static inline int needs_codes(const fit_state *f)
{
    return f->opt.loss == TSQ_LOSS_QUANTIZED || (f->pass == 0 && f->target == TARGET_CODES);
}

/* ---- crossings between the driver files ---- */

/* regressor_begin.c: the fit state's life and the validation of inputs. */
void tsq__reg_fit_free(tsq_context *ctx, fit_state *f);
tsq_status tsq__reg_check_matrix(tsq_regressor *reg, const char *where, const char *name,
                                 const tsq_tensor *t, int64_t rows, int64_t cols);
tsq_status tsq__reg_check_w_init(tsq_regressor *reg, const char *where, const tsq_tensor *W,
                                 int64_t d, int64_t C);
/* Makes a new fit state in *out (reg->fit is left alone). */
tsq_status tsq__reg_begin_fit(tsq_regressor *reg, const char *where, int64_t d, int64_t C,
                              const tsq_tensor *W_init, int32_t with_preact, fit_state **out);
/* Checks (X, Y, P) against the fit's current pass and fills *bt. */
tsq_status tsq__reg_check_batch(tsq_regressor *reg, const char *where, const tsq_tensor *X,
                                const tsq_tensor *Y, const tsq_tensor *P, batch *bt);
void tsq__reg_reset_pass_sums(fit_state *f);

/* regressor_feed.c: adds validated rows to the current pass. */
void tsq__reg_feed_rows(fit_state *f, const batch *bt);

/* regressor_products.c: the products u = X w kept across passes. */
enum { PRODUCTS_ALL = 1, PRODUCTS_UPDATE, PRODUCTS_NONE };
/* tsq_fit_transform, before pass 0: a cache for bt's rows when exact
 * (else none: the same results, slower). TSQ_ERR_NO_MEMORY when its
 * allocation is refused. */
tsq_status tsq__reg_cache_init(tsq_context *ctx, fit_state *f, const batch *bt);
void tsq__reg_cache_free(tsq_context *ctx, fit_state *f);
/* Before a pass over the cached rows: what the products need (the lists
 * of changed weights and channels in f). */
int tsq__reg_products_plan(fit_state *f);
/* Rows [0, rows) of x (u8) / xf (the same as floats, needed only for the
 * dense channels) bring their cached products v up to date; scratch holds
 * rows x C floats. */
void tsq__reg_products_update(const fit_state *f, const uint8_t *x, const float *xf, int64_t rows,
                              float *v, float *scratch);
/* After the pass: the cache holds the products of the current w. */
void tsq__reg_products_done(fit_state *f);


/* regressor_pass.c: ends the current pass (abandons the fit on failure). */
tsq_status tsq__reg_end_pass(tsq_regressor *reg, const char *where, int32_t *done);
tsq__gram tsq__reg_gram_of(const fit_state *f);
/* Iterate h_count has objective obj[] per channel: record it, keep the best
 * per channel, extend the history. */
void tsq__reg_record_iterate(fit_state *f, const double *obj, double relaxed, double lambda);
/* r = M w of every channel into f->r and w^T M w into f->wmw. */
void tsq__reg_quad_forms(fit_state *f, const tsq__gram *g);
/* Marks the fit done and frees its work arena (results stay). */
void tsq__reg_finish(tsq_regressor *reg);

/* This pass solved the channels [c0, c1) (what travels: `exchange`):
 * takes the decisions that need every channel now, or, with shares, leaves
 * them to tsq__reg_conclude after the shares' import. */
tsq_status tsq__reg_solved(tsq_regressor *reg, int32_t exchange, int32_t *done);
/* Those decisions, once every channel's results are in place. */
tsq_status tsq__reg_conclude(tsq_regressor *reg, int32_t *done);

/* regressor_polish_pass.c: after the rounds, the polish (or the end). */
tsq_status tsq__reg_finish_or_polish(tsq_regressor *reg, int32_t *done);
tsq_status tsq__reg_end_polish_pass(tsq_regressor *reg, int32_t *done);
/* After a search pass's solves: on to the pass that checks its candidates. */
tsq_status tsq__reg_conclude_search(tsq_regressor *reg, int32_t *done);

/* regressor_share.c: share s's channels [*c0, *c1) of C. */
void tsq__reg_share_range(int64_t C, int32_t s, int32_t shares, int64_t *c0, int64_t *c1);
/* TSQ_ERR_STATE while an exchange is due (feed, stats, end_pass wait). */
tsq_status tsq__reg_check_no_exchange(const tsq_regressor *reg, const char *where);

#endif
