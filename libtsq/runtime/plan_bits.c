/* The fused path of the inference plan (docs/kernels.md, "Activations in
 * the kernel's format"). Between low-bit layers the activation stays in the
 * operand format of the kernel chosen per stage: bit planes for the VPOPCNT
 * kernel, bytes for the VNNI (or AVX2) kernel, two codes a byte for the
 * AVX2 table kernel, all padded NHWC (kernels/bitplane.h).
 * Each layer's threshold epilogue writes the next layer's operand (a 2 x 2
 * max-pool fused), the float front (affine, ReLU, quantizer) writes the
 * first one in one pass, and a convolution builds the im2col rows of one
 * band of output rows at a time, so no codes are expanded, re-encoded or
 * copied between layers and the scratch is bounded by the band and the
 * threads, not the batch. */
#include "runtime/plan_internal.h"

#include <string.h>

/* Output pixels per work item of a convolution, about: the band of output
 * rows whose im2col rows and accumulators one thread holds (a few tens of
 * kB for the demo's layers, within L2). */
#define BAND_PIXELS 128
/* Rows of a dense stage per work item. */
#define DENSE_ROWS 96
#define ALIGN 64

static uint64_t round_up(uint64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

static int64_t acc_ld(int64_t n) { return (n + 31) / 32 * 32; }

int tsq__plan_bits_avx2(const tsq_plan *p)
{
    return !tsq__kernel_runs(TSQ_KERNEL_VNNI, p->cpu) && tsq__kernel_runs(TSQ_KERNEL_AVX2, p->cpu);
}

int tsq__plan_bits_layout(const tsq_plan *p, int conv, int32_t code_bits, int32_t weight_bits)
{
    /* Per stage, by the kernels' speed on the plan's shapes (docs/kernels.md,
     * "Bit planes or bytes"): VNNI's vpdpbusd runs on two ports where
     * vpopcntq has one, and beat the bit-serial kernel on every fmnist
     * convolution; a dense layer reads one row per image, where the 4x
     * smaller bit-plane weights win (a batch-1 product streams them).
     * Without AVX-512, the AVX2 kernel's 16-bit sums take the bytes when
     * a pair of products cannot leave int16 (its in-place form has no
     * nibble split). */
    int bits = tsq__kernel_runs(TSQ_KERNEL_VPOPCNT, p->cpu) && code_bits * weight_bits <= 4;
    int bytes = tsq__kernel_runs(TSQ_KERNEL_VNNI, p->cpu);
    if (tsq__plan_bits_avx2(p))
        return tsq__avx2_flush_steps(tsq__max_code(code_bits) * tsq__max_weight(weight_bits))
                   ? TSQ__BP_BYTES
                   : 0;
    if (bytes && (conv || !bits))
        return TSQ__BP_BYTES;
    return bits ? TSQ__BP_BITS : 0;
}

/* A low-bit conv on the fused path, whose epilogue can write either layout
 * (the reader's: the kernels of the two layers need not be the same). */
static int fusable(const tsq__plan_stage *s)
{
    return s->op == OP_LOWBIT && s->bp_in && s->conv && s->th && !s->bp_out;
}



static void link_one(tsq__plan_stage *list, int32_t *cnt, const tsq__plan_stage *consumer)
{
    tsq__plan_stage *last = *cnt > 0 ? &list[*cnt - 1] : NULL, *t;
    if (last && last->op == OP_CPOOL && last->k == 2 && last->stride == 2 && *cnt >= 2 &&
        fusable(&list[*cnt - 2])) {
        tsq__plan_stage *prod = &list[*cnt - 2];
        prod->bp_out = prod->bp_pool = 1;
        prod->bout = consumer->bin;
        prod->oh = last->oh;
        prod->ow = last->ow;
        (*cnt)--; /* the pool is now part of the epilogue */
        return;
    }
    if (last && fusable(last)) {
        last->bp_out = 1;
        last->bout = consumer->bin;
        return;
    }
    t = &list[(*cnt)++];
    memset(t, 0, sizeof *t);
    t->op = OP_TOBP;
    t->c = t->oc = consumer->c;
    t->h = t->oh = consumer->h;
    t->w = t->ow = consumer->w;
    t->bout = consumer->bin;
}

/* Whether the front can take over the float conv `conv`. */
static int front_conv(const tsq__plan_stage *conv)
{
    return conv->op == OP_CONV && tsq__conv_direct_runs(&conv->g, conv->cpu) &&
           conv->g.k <= TSQ__CONV_DIRECT_K;
}

/* The float conv before a front into bytes, when it is computed directly
 * (the net computes it so too) in one short chain per output (a first
 * layer's small patch): the front takes it over, with its weights
 * tap-major for the kernel. 1 if taken, 0 if not, -1 if the copy cannot be
 * allocated. */
static int take_conv(tsq_context *ctx, tsq__plan_stage *f, tsq__plan_stage *conv)
{
    int64_t ld = (conv->g.cout + 15) / 16 * 16, t, c;
    float *wt;
    if (!front_conv(conv))
        return 0;
    wt = tsq__calloc(ctx, (size_t)(conv->g.k * ld), sizeof *wt);
    if (!wt)
        return -1;
    for (t = 0; t < conv->g.k; t++)
        for (c = 0; c < conv->g.cout; c++)
            wt[t * ld + c] = conv->weight[c * conv->g.k + t];
    tsq__free(ctx, conv->weight);
    f->op = OP_CONV_FRONT;
    f->g = conv->g;
    f->weight = wt;
    f->bias = conv->bias;
    f->c = conv->c;
    f->h = conv->h;
    f->w = conv->w;
    return 1;
}

/* [conv] [affine] [relu] encode, then to bit planes: one pass from the
 * floats (stages i - len .. i, i the conversion), the encode's arrays
 * moving to the new stage. Returns the number of stages it replaced (0:
 * none), or -1 out of memory (the list unchanged). */
static int32_t fuse_front(tsq_context *ctx, tsq__plan_stage *list, int32_t i, int avx2)
{
    tsq__plan_stage f, *enc = &list[i - 1];
    int32_t first = i - 1;
    int taken;
    memset(&f, 0, sizeof f);
    if (i < 1 || enc->op != OP_ENCODE)
        return 0;
    if (first >= 1 && list[first - 1].op == OP_RELU) {
        f.relu = 1;
        first--;
    }
    if (first >= 1 && list[first - 1].op == OP_AFFINE) {
        first--;
        f.s = list[first].s;
        f.t = list[first].t;
    }
    f.op = OP_FRONT;
    f.c = f.oc = enc->c;
    f.h = f.oh = enc->h;
    f.w = f.ow = enc->w;
    f.bout = list[i].bout;
    f.qeps = enc->s;
    f.qinv = enc->t;
    f.maxcode = enc->maxcode;
    f.short_form = tsq__front_short_form(f.qeps, f.qinv, f.c);
    /* AVX2 has the front with its conv only; without one, the encode
     * (its own AVX2 kernel) and the copy into bytes stay. */
    if (avx2 && !(f.bout.bytes == 1 && first >= 1 && front_conv(&list[first - 1])))
        return 0;
    f.bp_avx2 = avx2;
    taken = f.bout.bytes && first >= 1 ? take_conv(ctx, &f, &list[first - 1]) : 0;
    if (taken < 0)
        return -1;
    first -= taken;
    list[first] = f;
    return i - first;
}

tsq_status tsq__plan_bits_link(tsq_context *ctx, tsq_plan *p)
{
    tsq__plan_stage *list;
    int32_t i, cnt = 0, any = 0;
    for (i = 0; i < p->nstages; i++)
        any |= p->stages[i].op == OP_LOWBIT && p->stages[i].bp_in;
    if (!any)
        return TSQ_OK;
    list = tsq__calloc(ctx, (size_t)(2 * p->nstages), sizeof *list);
    if (!list)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "plan_create: out of memory");
    for (i = 0; i < p->nstages; i++) {
        const tsq__plan_stage *s = &p->stages[i];
        if (s->op == OP_LOWBIT && s->bp_in)
            link_one(list, &cnt, s);
        list[cnt++] = *s;
    }
    /* Every pointer moved to the new list (a dropped pool owns none). */
    tsq__free(ctx, p->stages);
    p->stages = list;
    p->nstages = cnt;
    for (i = 0; i < p->nstages; i++) {
        int32_t gone =
            list[i].op == OP_TOBP ? fuse_front(ctx, list, i, tsq__plan_bits_avx2(p)) : 0;
        if (gone < 0)
            return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "plan_create: out of memory");
        if (gone > 0) { /* stages first + 1 .. i go; their arrays moved to the new one */
            memmove(&list[i - gone + 1], &list[i + 1],
                    (size_t)(p->nstages - i - 1) * sizeof *list);
            p->nstages -= gone;
            i -= gone;
        }
    }
    return TSQ_OK;
}

/* ---- sizes ---- */

static uint64_t xp_bytes(const tsq__plan_stage *s, int64_t rows)
{
    return round_up((uint64_t)rows * (uint64_t)s->bin.planes * (uint64_t)s->win.kwords * 8u +
                    TSQ__BP_SLACK);
}

static int64_t item_rows(const tsq__plan_stage *s, int64_t n)
{
    if (s->conv) {
        int64_t band = s->band < s->win.oh ? s->band : s->win.oh;
        return band * s->win.ow;
    }
    return n < DENSE_ROWS ? n : DENSE_ROWS;
}

void tsq__plan_bits_sizes(const tsq__plan_stage *s, int64_t n, int64_t threads, uint64_t *outb,
                          uint64_t *scratch)
{
    int64_t rows;
    *scratch = 0;
    /* Bit planes are read by the gather with TSQ__BP_SLACK bytes past the end. */
    if (s->op == OP_TOBP || s->op == OP_FRONT || s->op == OP_CONV_FRONT) {
        *outb = (uint64_t)n * (uint64_t)s->bout.image + TSQ__BP_SLACK;
        if (s->op == OP_CONV_FRONT)
            *scratch = (uint64_t)threads *
                       round_up((uint64_t)tsq__conv_direct_ws_floats(&s->g) * sizeof(float));
        return;
    }
    *outb = s->bp_out ? (uint64_t)n * (uint64_t)s->bout.image + TSQ__BP_SLACK
                      : (uint64_t)n * (uint64_t)(s->oc * s->oh * s->ow);
    rows = item_rows(s, n);
    *scratch = (uint64_t)threads *
               ((s->conv ? xp_bytes(s, rows) : 0) +
                round_up((uint64_t)rows * (uint64_t)acc_ld(s->oc) * sizeof(int32_t)));
}

/* ---- running ---- */

typedef struct {
    const tsq__plan_stage *s;
    const uint8_t *x;
    uint8_t *y;
    int64_t n, items, per_image, threads;
    uint8_t *scratch;
    uint64_t slot_bytes;
} bits_job;

/* The AVX2 kernel's bound on one product (its 16-bit sums). */
static int32_t maxprod(const tsq__plan_stage *s)
{
    return tsq__max_code(s->code_bits) * tsq__max_weight(s->pw->bits);
}

/* The rows of k bytes of codes x (ldx apart) times the stage's weights
 * into acc, on the byte layout's kernel (in the pair layout a byte is a
 * pair of k). */
static void gemm_bytes(const tsq__plan_stage *s, const uint8_t *x, int64_t ldx, int64_t m,
                       int64_t k, int32_t *acc, int64_t ld)
{
    if (s->bp_pairs)
        tsq__gemm_pairs_avx2(x, ldx, m, k, s->pairs, s->pairs_flush, s->oc, acc, ld);
    else if (s->bp_avx2)
        tsq__gemm_avx2(x, ldx, m, k, s->dec, maxprod(s), 0, s->oc, acc, ld);
    else
        tsq__gemm_vnni(x, ldx, m, k, s->dec, 0, s->oc, acc, ld);
}

/* The codes of rows of accumulators (a dense stage's, or a conv's not
 * written in a bit-plane layout). */
static void thresholds(const tsq__plan_stage *s, const int32_t *acc, int64_t ld, int64_t rows,
                       uint8_t *out)
{
    if (s->bp_avx2)
        tsq__thresholds_apply_avx2(s->th, acc, ld, rows, 0, s->oc, out, s->oc);
    else
        tsq__thresholds_apply_avx512(s->th, acc, ld, rows, 0, s->oc, out, s->oc);
}

/* Output rows y0 .. y0 + nr - 1 of a byte-layout convolution through the
 * VNNI (or AVX2) kernel reading the image in place: a pointer per output
 * pixel to its window's first row (in the scratch of the im2col rows, which it
 * does not need). */
static void conv_in_place(const tsq__plan_stage *s, const uint8_t *img, int64_t y0, int64_t nr,
                          const uint8_t **rows, int32_t *acc, int64_t ld)
{
    int64_t oy, ox, r = 0, step = s->win.stride * s->bin.cb;
    for (oy = y0; oy < y0 + nr; oy++)
        for (ox = 0; ox < s->win.ow; ox++)
            rows[r++] = img + oy * s->win.stride * s->bin.row + ox * step;
    if (s->bp_pairs)
        tsq__conv_pairs_avx2(rows, r, s->win.kh, s->win.kw * s->bin.cb, s->bin.row,
                             s->pw->k / 2, s->pairs, s->pairs_flush, s->oc, acc, ld);
    else if (s->bp_avx2)
        tsq__conv_avx2(rows, r, s->win.kh, s->win.kw * s->bin.cb, s->bin.row,
                       s->win.kwords * 8, s->dec, maxprod(s), 0, s->oc, acc, ld);
    else
        tsq__conv_vnni(rows, r, s->win.kh, s->win.kw * s->bin.cb, s->bin.row,
                       s->win.kwords * 8, s->dec, 0, s->oc, acc, ld);
}

static void conv_item(const bits_job *j, int64_t item, uint64_t *xp, int32_t *acc)
{
    const tsq__plan_stage *s = j->s;
    int64_t img = item / j->per_image, oh = s->win.oh, ow = s->win.ow;
    int64_t y0 = item % j->per_image * s->band, nr = oh - y0 < s->band ? oh - y0 : s->band;
    int64_t ld = acc_ld(s->oc);
    if (s->bp_amx && s->bp_inplace) {
        /* Each output row is a set of ow rows, stride * cb bytes apart. */
        tsq__conv_amx(j->x + img * s->bin.image + y0 * s->win.stride * s->bin.row, nr,
                      s->win.stride * s->bin.row, ow, s->win.stride * s->bin.cb, s->amx_kh,
                      s->amx_seg, s->bin.row, s->amx, s->oc, acc, ld);
    } else if (s->bp_inplace) {
        conv_in_place(s, j->x + img * s->bin.image, y0, nr, (const uint8_t **)(void *)xp, acc,
                      ld);
    } else {
        if (s->bp_avx2)
            tsq__bp_gather_ref(&s->bin, &s->win, j->x + img * s->bin.image, y0 * ow, nr * ow,
                               xp);
        else
            tsq__bp_gather_avx512(&s->bin, &s->win, j->x + img * s->bin.image, y0 * ow,
                                  nr * ow, xp);
        if (s->bp_amx)
            tsq__conv_amx((const uint8_t *)xp, 1, 0, nr * ow, s->win.kwords * 8, 1,
                          s->amx_seg, 0, s->amx, s->oc, acc, ld);
        else if (s->bp_bytes)
            gemm_bytes(s, (const uint8_t *)xp, s->win.kwords * 8, nr * ow, s->win.kwords * 8,
                       acc, ld);
        else
            tsq__gemm_vpopcnt(xp, nr * ow, s->bin.nb, s->pw, 0, s->oc, acc, ld);
    }
    if (s->bp_out && s->bout.bytes && s->bp_avx2)
        tsq__bp_epilogue_bytes_avx2(s->th, acc, ld, y0, nr, ow, s->bp_pool, &s->bout,
                                    j->y + img * s->bout.image);
    else if (s->bp_out && s->bout.bytes)
        tsq__bp_epilogue_bytes_avx512(s->th, acc, ld, y0, nr, ow, s->bp_pool, &s->bout,
                                      j->y + img * s->bout.image);
    else if (s->bp_out)
        tsq__bp_epilogue_avx512(s->th, acc, ld, y0, nr, ow, s->bp_pool, &s->bout,
                                j->y + img * s->bout.image);
    else
        thresholds(s, acc, ld, nr * ow, j->y + (img * oh + y0) * ow * s->oc);
}

static void dense_item(const bits_job *j, int64_t item, int32_t *acc)
{
    const tsq__plan_stage *s = j->s;
    int64_t r0 = item * DENSE_ROWS, rows = j->n - r0 < DENSE_ROWS ? j->n - r0 : DENSE_ROWS;
    int64_t ld = acc_ld(s->oc);
    /* With no border, the images are the kernel's bit-plane rows as they are. */
    const uint64_t *xp = (const uint64_t *)(const void *)(j->x + r0 * s->bin.image);
    if (s->bp_amx)
        tsq__conv_amx(j->x + r0 * s->bin.image, 1, 0, rows, s->bin.image, 1, s->amx_seg, 0,
                      s->amx, s->oc, acc, ld);
    else if (s->bp_bytes)
        gemm_bytes(s, j->x + r0 * s->bin.image, s->bin.image, rows, s->bin.image, acc, ld);
    else
        tsq__gemm_vpopcnt(xp, rows, s->bin.nb, s->pw, 0, s->oc, acc, ld);
    thresholds(s, acc, ld, rows, j->y + r0 * s->oc);
}

static void bits_task(void *arg, int64_t slot)
{
    const bits_job *j = arg;
    const tsq__plan_stage *s = j->s;
    uint8_t *mine = j->scratch + (uint64_t)slot * j->slot_bytes;
    uint64_t xpb = s->conv ? xp_bytes(s, item_rows(s, j->n)) : 0;
    int64_t item;
    for (item = slot; item < j->items; item += j->threads) {
        if (s->conv)
            conv_item(j, item, (uint64_t *)(void *)mine, (int32_t *)(void *)(mine + xpb));
        else
            dense_item(j, item, (int32_t *)(void *)mine);
    }
}

static void tobp_range(void *arg, int64_t lo, int64_t hi)
{
    const bits_job *j = arg;
    const tsq__plan_stage *s = j->s;
    int64_t i, per = s->c * s->h * s->w;
    for (i = lo; i < hi; i++) {
        if (s->bout.bytes)
            tsq__bp_bytes_from_codes(&s->bout, j->x + i * per, j->y + i * s->bout.image);
        else
            tsq__bp_from_codes_avx512(&s->bout, j->x + i * per, j->y + i * s->bout.image);
    }
}

static void front_range(void *arg, int64_t lo, int64_t hi)
{
    const bits_job *j = arg;
    const tsq__plan_stage *s = j->s;
    int64_t i, per = s->c * s->h * s->w;
    for (i = lo; i < hi; i++) {
        const float *xi = (const float *)(const void *)j->x + i * per;
        if (s->bout.bytes)
            tsq__bp_encode_bytes_avx512(&s->bout, xi, s->s, s->t, s->relu, s->qeps, s->qinv,
                                        s->maxcode, j->y + i * s->bout.image);
        else
            tsq__bp_encode_avx512(&s->bout, xi, s->s, s->t, s->relu, s->qeps, s->qinv,
                                  s->maxcode, j->y + i * s->bout.image);
    }
}

/* Thread `slot` takes images slot, slot + T, ... with its own scratch. */
static void conv_front_task(void *arg, int64_t slot)
{
    const bits_job *j = arg;
    const tsq__plan_stage *s = j->s;
    int64_t i, per = s->c * s->h * s->w;
    tsq__conv_front f = {&s->g, s->weight, (s->g.cout + 15) / 16 * 16, s->bias, s->s, s->t,
                         s->relu, s->qeps, s->qinv, s->maxcode, s->short_form};
    float *mine = (float *)(void *)(j->scratch + (uint64_t)slot * j->slot_bytes);
    for (i = slot; i < j->n; i += j->threads) {
        const float *xi = (const float *)(const void *)j->x + i * per;
        if (s->bp_avx2)
            tsq__conv_front_bytes_avx2(&f, xi, &s->bout, j->y + i * s->bout.image, mine);
        else
            tsq__conv_front_bytes_avx512(&f, xi, &s->bout, j->y + i * s->bout.image, mine);
    }
}

void tsq__plan_bits_run(int64_t threads, const tsq__plan_stage *s, const void *x, void *y,
                        int64_t n, uint8_t *scratch)
{
    bits_job j;
    uint64_t outb;
    memset(&j, 0, sizeof j);
    j.s = s;
    j.x = x;
    j.y = y;
    j.n = n;
    if (s->op == OP_CONV_FRONT) {
        tsq__plan_bits_sizes(s, n, threads, &outb, &j.slot_bytes);
        j.slot_bytes /= (uint64_t)threads;
        j.scratch = scratch;
        j.threads = threads < n ? threads : n;
        tsq__parallel_for(j.threads, j.threads, conv_front_task, &j);
        return;
    }
    if (s->op == OP_TOBP || s->op == OP_FRONT) {
        tsq__parallel_range(threads, n, s->c * s->h * s->w,
                            s->op == OP_TOBP ? tobp_range : front_range, &j);
        return;
    }
    tsq__plan_bits_sizes(s, n, threads, &outb, &j.slot_bytes);
    j.slot_bytes /= (uint64_t)threads;
    j.scratch = scratch;
    if (s->conv) {
        j.per_image = (s->win.oh + s->band - 1) / s->band;
        j.items = n * j.per_image;
    } else {
        j.items = (n + DENSE_ROWS - 1) / DENSE_ROWS;
    }
    j.threads = threads < j.items ? threads : j.items;
    if (s->bp_out) /* the borders (the epilogue writes only the interior) */
        memset(y, 0, (size_t)outb);
    tsq__parallel_for(j.threads, j.threads, bits_task, &j);
}
