/* Building the inference plan from a network description (runtime/desc.h;
 * docs/kernels.md, "The inference plan"). Everything is decided here once:
 * the stage list, the layouts, the packed weights, the thresholds and the
 * encode kernel; plan_run.c only executes.
 *
 * Hidden low-bit stages read codes and, with the quantizer after them,
 * become a low-bit GEMM with a threshold epilogue: the per-channel affine
 * and quantizer are integer thresholds (docs/method.md §6.1). Everything
 * else runs in float with the same kernels as the layers, so the plan's
 * output is the network's float simulation, bit for bit.
 *
 * Layout rules: a conv's weights are packed in the (ky, kx, c) order of
 * im2col on NHWC codes; a dense stage after a flatten of NHWC codes gets
 * its weight rows permuted from the float (c, h, w) order to (h, w, c), so
 * no transposition is needed at run time. A low-bit stage on the fused
 * path (plan_bits.c) reads bit planes or bytes instead: its weights are
 * packed in that layout's k order (channels padded per pixel), and
 * tsq__plan_bits_link then makes its producer write that layout. */
#include "runtime/desc.h"
#include "runtime/plan_internal.h"

#include <string.h>

typedef struct {
    tsq_context *ctx;
    tsq_plan *plan;
    int32_t cap;
    /* the activation after the stages so far */
    int codes;       /* 1: u8 NHWC codes; 0: float NCHW */
    int64_t c, h, w; /* physical dims */
    int flat;        /* codes flattened from (c, h, w) */
    int32_t bits;    /* bits of the codes */
    int amx;         /* byte-layout stages on AMX tiles: 0 not asked yet, 1 yes, -1 no */
} builder;

static tsq_status oom(builder *b)
{
    return tsq__fail(&b->ctx->obj, TSQ_ERR_NO_MEMORY, "plan_create: out of memory");
}

static tsq__plan_stage *add_stage(builder *b, int32_t op)
{
    tsq__plan_stage *s;
    if (b->plan->nstages == b->cap) {
        int32_t cap = b->cap ? 2 * b->cap : 16;
        tsq__plan_stage *n = tsq__calloc(b->ctx, (size_t)cap, sizeof *n);
        if (!n)
            return NULL;
        if (b->plan->stages)
            memcpy(n, b->plan->stages, (size_t)b->plan->nstages * sizeof *n);
        tsq__free(b->ctx, b->plan->stages);
        b->plan->stages = n;
        b->cap = cap;
    }
    s = &b->plan->stages[b->plan->nstages++];
    memset(s, 0, sizeof *s);
    s->op = op;
    s->c = s->oc = b->c;
    s->h = s->oh = b->h;
    s->w = s->ow = b->w;
    return s;
}

static float *copy_floats(builder *b, const float *src, int64_t n)
{
    float *d = tsq__alloc(b->ctx, (size_t)n * sizeof(float));
    if (d && src)
        memcpy(d, src, (size_t)n * sizeof(float));
    else if (d)
        memset(d, 0, (size_t)n * sizeof(float));
    return d;
}

static void set_dims(builder *b, tsq__plan_stage *s, int64_t c, int64_t h, int64_t w)
{
    s->oc = b->c = c;
    s->oh = b->h = h;
    s->ow = b->w = w;
}

/* The parameter set of channel c of a quantizer stage. */
static int64_t qidx(const tsq__stage_desc *q, int64_t c) { return q->nq > 1 ? c : 0; }

/* Codes -> float NCHW with per-channel scale: delta of `quant` (values
 * mode outputs code * delta), or 1 when quant is NULL (codes mode). */
static tsq_status add_decode(builder *b, const tsq__stage_desc *quant)
{
    tsq__plan_stage *s = add_stage(b, OP_DECODE);
    int64_t c;
    if (!s)
        return oom(b);
    s->s = tsq__alloc(b->ctx, (size_t)b->c * sizeof(float));
    if (!s->s)
        return oom(b);
    for (c = 0; c < b->c; c++)
        s->s[c] = quant ? quant->delta[qidx(quant, c)] : 1.0f;
    b->codes = 0;
    b->flat = 0;
    return TSQ_OK;
}

/* The bits of a quantizer's codes: the largest of its channels (*mixed set
 * when they differ). */
static int32_t quant_bits(const tsq__stage_desc *q, int *mixed)
{
    int64_t c;
    int32_t hi = 0, lo = 9;
    for (c = 0; c < q->nq; c++) {
        hi = q->bits[c] > hi ? q->bits[c] : hi;
        lo = q->bits[c] < lo ? q->bits[c] : lo;
    }
    *mixed = hi != lo;
    return hi;
}

static tsq_status build_quant(builder *b, const tsq__stage_desc *q)
{
    tsq__plan_stage *s;
    int64_t c;
    int mixed;
    if (b->codes && add_decode(b, NULL) != TSQ_OK) /* a quantizer on codes: float first */
        return TSQ_ERR_NO_MEMORY;
    s = add_stage(b, OP_ENCODE);
    if (!s)
        return oom(b);
    s->s = tsq__alloc(b->ctx, (size_t)b->c * sizeof(float));
    s->t = tsq__alloc(b->ctx, (size_t)b->c * sizeof(float));
    s->maxcode = tsq__alloc(b->ctx, (size_t)b->c * sizeof(int32_t));
    if (!s->s || !s->t || !s->maxcode)
        return oom(b);
    for (c = 0; c < b->c; c++) {
        int64_t i = qidx(q, c);
        s->s[c] = q->eps[i];
        s->t[c] = 1.0f / q->delta[i]; /* as the quantizer computes it */
        s->maxcode[c] = tsq__max_code(q->bits[i]);
    }
    s->encode = (b->plan->cpu & TSQ_CPU_AVX2) ? tsq__encode_span_avx2 : tsq__encode_span_c;
    b->codes = 1;
    b->bits = quant_bits(q, &mixed);
    return q->codes_out ? TSQ_OK : add_decode(b, q);
}

/* The packed row of the float order's column i. */
static int64_t packed_row(const builder *b, const tsq__plan_stage *s, int64_t i)
{
    if (s->bp_in) { /* bit planes: channels padded to bytes (kernels/bitplane.h) */
        int64_t kk = s->kh * s->kw, hw = b->h * b->w;
        if (s->conv)
            return tsq__bp_k(&s->bin, s->kw, (i % kk) / s->kw, i % s->kw, i / kk);
        return (i % hw) * s->bin.kpix + i / hw;
    }
    if (s->conv) {
        int64_t kk = s->kh * s->kw, ci = i / kk, ky = (i % kk) / s->kw, kx = i % s->kw;
        return (ky * s->kw + kx) * s->c + ci;
    }
    if (b->flat) {
        int64_t hw = b->h * b->w;
        return (i % hw) * b->c + i / hw;
    }
    return i;
}

/* Rows of the packed weights of a bit-plane stage: a conv's window over
 * byte-padded channels, or a dense layer's whole input plane. */
static int64_t bits_k(const tsq__plan_stage *s)
{
    int64_t per_byte = s->bp_pairs ? 2 : s->bp_bytes ? 1 : 8; /* k entries per byte */
    return s->conv ? s->win.kwords * 8 * per_byte : s->bin.plane * per_byte;
}

static tsq_status pack_lowbit(builder *b, tsq__plan_stage *s, const tsq__stage_desc *d,
                              int64_t in, int64_t out)
{
    tsq_tensor *wt = NULL;
    int8_t *w;
    int64_t kp = s->bp_in ? bits_k(s) : in, shape[2] = {kp, out}, o, i;
    tsq_status st;
    if ((double)in * tsq__max_code(b->bits) * tsq__max_weight(d->weight_bits) >
        (double)INT32_MAX)
        return tsq__fail(&b->ctx->obj, TSQ_ERR_OVERFLOW,
                         "plan_create: a %lld-long dot product of %d-bit codes and %d-bit "
                         "weights could overflow int32",
                         (long long)in, (int)b->bits, (int)d->weight_bits);
    st = tsq_tensor_create(b->ctx, TSQ_DTYPE_I8, 2, shape, &wt);
    if (st != TSQ_OK)
        return st;
    w = wt->data;
    memset(w, 0, (size_t)(kp * out));
    for (o = 0; o < out; o++)
        for (i = 0; i < in; i++)
            w[packed_row(b, s, i) * out + o] = d->wcodes[o * in + i];
    st = tsq_packed_weights_create(b->ctx, wt, d->weight_bits, &s->pw);
    tsq_tensor_destroy(wt);
    if (st != TSQ_OK)
        return st;
    b->plan->lowbit++;
    b->plan->packed_bytes += (int64_t)s->pw->bytes;
    b->plan->packed_fp32 += 4 * in * out;
    return TSQ_OK;
}

/* The quantizer after a low-bit stage as thresholds (one bit width). */
static tsq_status fuse_quant(builder *b, tsq__plan_stage *s, const tsq__stage_desc *d,
                             const tsq__stage_desc *q)
{
    tsq_status st = tsq_thresholds_create(b->ctx, s->oc, s->alpha, d->bias, b->bits, q->eps,
                                          q->delta, q->nq, &s->th);
    if (st != TSQ_OK)
        return st;
    b->plan->fused++;
    b->codes = 1;
    return q->codes_out ? TSQ_OK : add_decode(b, q);
}

/* The bit-plane input of a low-bit stage whose input dims are s->c, h, w
 * (runtime/plan_bits.c). */
static void setup_bits(const tsq_plan *plan, tsq__plan_stage *s, const tsq__stage_desc *d,
                       int32_t bits, int layout, int pairs)
{
    s->bp_in = 1;
    s->bp_bytes = layout == TSQ__BP_BYTES;
    s->bp_avx2 = s->bp_bytes && tsq__plan_bits_avx2(plan);
    s->bp_pairs = s->bp_avx2 && pairs;
    tsq__bp_geom_fill(&s->bin, s->c, s->h, s->w, s->conv ? s->pad : 0, bits,
                      s->bp_pairs ? 2 : s->bp_bytes);
    if (!s->conv)
        return;
    s->win.kh = s->kh;
    s->win.kw = s->kw;
    s->win.stride = s->stride;
    s->win.oh = d->out_h;
    s->win.ow = d->out_w;
    s->win.kwords = (s->kh * s->kw * s->bin.cb + 7) / 8;
    /* Bytes whose window rows hold whole groups of 4 k: the VNNI kernel
     * reads them in place (tsq__conv_vnni), with no im2col copy. */
    s->bp_inplace = s->bp_pairs || (s->bp_bytes && s->kw * s->bin.cb % 4 == 0);
    /* Bands of output rows: even (a fused 2 x 2 pool takes whole windows). */
    s->band = 128 / d->out_w;
    s->band = s->band < 2 ? 2 : s->band / 2 * 2;
}

/* Whether byte-layout stages run on AMX tiles: the CPU reports AMX-INT8
 * (with the VNNI kernel's AVX-512 set, whose epilogues they share) and
 * Linux grants the permission, asked here once per plan and only for a
 * plan with such a stage. Refused, the plan stays on VNNI. */
static int use_amx(builder *b)
{
    if (!b->amx)
        b->amx = (b->plan->cpu & TSQ_CPU_AMXINT8) &&
                         tsq__kernel_runs(TSQ_KERNEL_VNNI, b->plan->cpu) && tsq__amx_permit()
                     ? 1
                     : -1;
    return b->amx > 0;
}

/* The VNNI panels of a byte-layout stage re-laid for the tiles: a window
 * row per segment when read in place, else the whole row of k (gathered
 * im2col rows, a dense layer's input). The panels themselves are freed. */
static tsq_status setup_amx(builder *b, tsq__plan_stage *s)
{
    int64_t k = s->pw->k, np = tsq__panels(s->pw->n);
    s->amx_kh = s->conv && s->bp_inplace ? s->kh : 1;
    s->amx_seg = s->conv && s->bp_inplace ? s->kw * s->bin.cb : k;
    s->amx = tsq__alloc(b->ctx, (size_t)(np * tsq__amx_panel_bytes(s->amx_kh, s->amx_seg)));
    if (!s->amx)
        return oom(b);
    tsq__amx_pack(s->dec, k, s->amx_kh, s->amx_seg, np, s->amx);
    tsq__free(b->ctx, s->dec);
    s->dec = NULL;
    s->bp_amx = 1;
    return TSQ_OK;
}

/* Whether the low-bit stage s (input dims set, `in` k entries, `out`
 * columns) reads the pair layout on AVX2 (docs/kernels.md, "Two codes a
 * byte"): codes of at most 2 bits and 2-bit weights (a pair's products
 * index a 16-entry table), an even channel count, columns enough for the
 * kernel's 64-column tile (at 32 the byte kernel is as fast), 16-bit row
 * sums that cannot overflow (k / 2 pairs of at most 12), and an input
 * written by a low-bit convolution's AVX2 epilogue (the float front
 * writes bytes only). */
static int pairs_here(const builder *b, const tsq__plan_stage *s, const tsq__stage_desc *d,
                      int64_t in, int64_t out)
{
    const tsq__plan_stage *prev = b->plan->nstages >= 2 ? &s[-1] : NULL;
    if (prev && prev->op == OP_CPOOL && b->plan->nstages >= 3)
        prev = &s[-2];
    return b->bits <= 2 && d->weight_bits == 2 && s->c % 2 == 0 && out >= TSQ__PAIR_COLS &&
           (in + 1) / 2 * 12 <= 32767 && prev && prev->op == OP_LOWBIT && prev->bp_avx2 &&
           prev->conv && prev->th;
}

/* The pair panels of stage s, and its byte sums' flush count from the
 * largest weight magnitude found. */
static tsq_status setup_pairs(builder *b, tsq__plan_stage *s)
{
    int64_t k = s->pw->k, n = s->pw->n, i;
    int8_t *w = tsq__alloc(b->ctx, (size_t)(k * n));
    int32_t big = 1;
    s->pairs = tsq__alloc(b->ctx, (size_t)tsq__pair_panel_bytes(k, n));
    if (!w || !s->pairs) {
        tsq__free(b->ctx, w);
        return oom(b);
    }
    tsq__unpack_weights(s->pw, w);
    for (i = 0; i < k * n; i++)
        big = w[i] < -1 ? 2 : big;
    tsq__pair_panels(w, k, n, s->pairs);
    tsq__free(b->ctx, w);
    s->pairs_flush = 127 / (2 * tsq__max_code(s->code_bits) * big);
    return TSQ_OK;
}

/* A low-bit stage; `next` is the stage after it (or NULL). *consumed is 1
 * when the quantizer `next` was fused. */
static tsq_status build_lowbit(builder *b, const tsq__stage_desc *d, const tsq__stage_desc *next,
                               int *consumed)
{
    tsq__plan_stage *s;
    int64_t in, out = d->out_c;
    tsq_status st;
    int mixed = 0, fuse, layout;
    *consumed = 0;
    if (!b->codes)
        return tsq__fail(&b->ctx->obj, TSQ_ERR_UNSUPPORTED,
                         "plan_create: low-bit layer %d is not fed by a codes-mode quantizer",
                         (int)d->layer);
    s = add_stage(b, OP_LOWBIT);
    if (!s)
        return oom(b);
    s->conv = d->conv;
    s->code_bits = b->bits;
    in = d->in_c * d->in_h * d->in_w;
    if (s->conv) {
        s->kh = d->geom.kh;
        s->kw = d->geom.kw;
        s->stride = d->geom.stride;
        s->pad = d->geom.pad;
        in = s->c * s->kh * s->kw;
    }
    s->alpha = copy_floats(b, d->alpha, out);
    if (!s->alpha)
        return oom(b);
    fuse = next && next->kind == TSQ__STAGE_QUANT;
    if (fuse)
        quant_bits(next, &mixed);
    layout = fuse && !mixed ? tsq__plan_bits_layout(b->plan, s->conv, b->bits, d->weight_bits)
                            : 0;
    if (layout)
        setup_bits(b->plan, s, d, b->bits, layout, pairs_here(b, s, d, in, out));
    st = pack_lowbit(b, s, d, in, out);
    if (st == TSQ_OK && s->bp_pairs) {
        if (setup_pairs(b, s) != TSQ_OK)
            return TSQ_ERR_NO_MEMORY;
    } else if (st == TSQ_OK && s->bp_bytes) { /* the panels once, not per call */
        int64_t k = s->pw->k;
        s->dec = tsq__alloc(b->ctx, (size_t)(tsq__panels(out) * tsq__k4n(k) * 64));
        if (!s->dec)
            return oom(b);
        if (s->bp_avx2)
            tsq__decode_panels_avx2(s->pw, 0, tsq__panels(out), s->dec);
        else
            tsq__decode_panels_avx512(s->pw, 0, tsq__panels(out), s->dec);
        if (!s->bp_avx2 && use_amx(b) && setup_amx(b, s) != TSQ_OK)
            return TSQ_ERR_NO_MEMORY;
    }
    if (st != TSQ_OK)
        return st;
    set_dims(b, s, out, s->conv ? d->out_h : 1, s->conv ? d->out_w : 1);
    b->plan->macs += (double)in * (double)out * (double)(s->oh * s->ow);
    b->flat = 0;
    if (next && next->kind == TSQ__STAGE_QUANT) {
        b->bits = quant_bits(next, &mixed);
        if (!mixed) {
            *consumed = 1;
            return fuse_quant(b, s, d, next);
        }
    }
    s->beta = copy_floats(b, d->bias, out);
    if (!s->beta)
        return oom(b);
    b->codes = 0;
    return TSQ_OK;
}

static tsq_status build_weights(builder *b, const tsq__stage_desc *d)
{
    int conv = d->kind == TSQ__STAGE_CONV;
    int64_t out = d->out_c, wn = out * (conv ? d->geom.k : d->in_c * d->in_h * d->in_w);
    tsq__plan_stage *s = add_stage(b, conv ? OP_CONV : OP_DENSE);
    if (!s)
        return oom(b);
    if (conv)
        s->g = d->geom;
    s->cpu = b->plan->cpu;
    s->weight = copy_floats(b, d->weight, wn);
    s->bias = copy_floats(b, d->bias, out);
    if (!s->weight || !s->bias)
        return oom(b);
    b->plan->float_bytes += 4 * (wn + out);
    set_dims(b, s, out, conv ? d->out_h : 1, conv ? d->out_w : 1);
    b->plan->macs += (double)wn * (double)(s->oh * s->ow);
    return TSQ_OK;
}

static tsq_status build_float(builder *b, const tsq__stage_desc *d)
{
    tsq__plan_stage *s;
    if (b->codes && d->kind != TSQ__STAGE_MAXPOOL && d->kind != TSQ__STAGE_FLATTEN &&
        add_decode(b, NULL) != TSQ_OK)
        return TSQ_ERR_NO_MEMORY;
    switch (d->kind) {
    case TSQ__STAGE_FLATTEN:
        if (b->codes && b->h * b->w > 1) {
            b->flat = 1; /* keep NHWC; the dense after it permutes its weights */
        } else {
            b->c = b->c * b->h * b->w;
            b->h = b->w = 1;
        }
        return TSQ_OK;
    case TSQ__STAGE_MAXPOOL:
        s = add_stage(b, b->codes ? OP_CPOOL : OP_FPOOL);
        if (!s)
            return oom(b);
        s->k = d->k;
        s->stride = d->stride;
        set_dims(b, s, b->c, d->out_h, d->out_w);
        return TSQ_OK;
    case TSQ__STAGE_RELU:
        return add_stage(b, OP_RELU) ? TSQ_OK : oom(b);
    case TSQ__STAGE_AFFINE:
        s = add_stage(b, OP_AFFINE);
        if (!s)
            return oom(b);
        s->s = copy_floats(b, d->scale, b->c);
        s->t = copy_floats(b, d->shift, b->c);
        if (!s->s || !s->t)
            return oom(b);
        b->plan->float_bytes += 8 * b->c;
        return TSQ_OK;
    case TSQ__STAGE_CONV:
    case TSQ__STAGE_DENSE:
        return build_weights(b, d);
    default:
        return tsq__fail(&b->ctx->obj, TSQ_ERR_UNSUPPORTED,
                         "plan_create: layer %d (%s) is not supported by the plan", (int)d->layer,
                         d->name ? d->name : "?");
    }
}

static void free_stages(tsq_plan *p)
{
    tsq_context *ctx = p->obj.ctx;
    int32_t i;
    for (i = 0; p->stages && i < p->nstages; i++) {
        tsq__plan_stage *s = &p->stages[i];
        tsq__free(ctx, s->weight);
        tsq__free(ctx, s->bias);
        tsq__free(ctx, s->s);
        tsq__free(ctx, s->t);
        tsq__free(ctx, s->maxcode);
        tsq__free(ctx, s->alpha);
        tsq__free(ctx, s->beta);
        tsq__free(ctx, s->qeps);
        tsq__free(ctx, s->qinv);
        tsq__free(ctx, s->dec);
        tsq__free(ctx, s->pairs);
        tsq__free(ctx, s->amx);
        tsq_packed_weights_destroy(s->pw);
        tsq_thresholds_destroy(s->th);
    }
    tsq__free(ctx, p->stages);
}

void tsq_plan_destroy(tsq_plan *plan)
{
    if (!plan)
        return;
    free_stages(plan);
    tsq__free(plan->obj.ctx, plan);
}

static tsq_status build(builder *b, const tsq__net_desc *d)
{
    int32_t i;
    tsq_status st = tsq__progress(&b->ctx->obj, TSQ_PROGRESS_PLAN_CREATE, 0, d->nstages,
                                  "plan_create");
    for (i = 0; i < d->nstages && st == TSQ_OK; i++) {
        const tsq__stage_desc *s = &d->stages[i];
        if (s->kind == TSQ__STAGE_LOWBIT) {
            int consumed;
            st = build_lowbit(b, s, i + 1 < d->nstages ? &d->stages[i + 1] : NULL, &consumed);
            i += consumed;
        } else if (s->kind == TSQ__STAGE_QUANT) {
            st = build_quant(b, s);
        } else {
            st = build_float(b, s);
        }
        if (st == TSQ_OK) /* the progress callback: stages i and before are planned */
            st = tsq__progress(&b->ctx->obj, TSQ_PROGRESS_PLAN_CREATE, i + 1, d->nstages,
                               "plan_create");
    }
    if (st == TSQ_OK && b->codes)
        st = add_decode(b, NULL) == TSQ_OK ? TSQ_OK : TSQ_ERR_NO_MEMORY;
    return st;
}

static const char *op_name(const tsq__plan_stage *s)
{
    switch (s->op) {
    case OP_CONV: return "float conv";
    case OP_DENSE: return "float dense";
    case OP_AFFINE: return "affine";
    case OP_RELU: return "relu";
    case OP_FPOOL: return "float max-pool";
    case OP_ENCODE: return "encode to codes";
    case OP_DECODE: return "decode to float";
    case OP_CPOOL: return "max-pool on codes";
    case OP_LOWBIT: return s->conv ? "low-bit conv" : "low-bit dense";
    case OP_TOBP: return "codes to bit planes";
    case OP_CONV_FRONT: return "float conv and front to codes";
    default: return "float front to codes";
    }
}

/* What the plan decided, a line per stage at info level (3): which kernel
 * and operand format each low-bit stage got, and what was fused. */
static void log_stages(tsq_context *ctx, const tsq_plan *p)
{
    int32_t i;
    for (i = 0; i < p->nstages; i++) {
        const tsq__plan_stage *s = &p->stages[i];
        const char *how = "";
        if (s->op == OP_LOWBIT)
            how = s->bp_amx     ? ", u8 operand on AMX-INT8 tiles"
                  : s->bp_pairs ? ", two codes a byte on AVX2 (table products)"
                  : s->bp_avx2  ? ", u8 operand on AVX2"
                  : s->bp_bytes ? ", u8 operand on AVX-512 VNNI"
                  : s->bp_in  ? ", bit planes on AVX-512 VPOPCNTDQ"
                              : ", codes on the packed-weight GEMM (kernel chosen per batch "
                                "size by plan_workspace_size)";
        tsq__log(ctx, 3 /* info */, "plan_create: stage %d/%d: %s, (%lld, %lld, %lld) -> "
                 "(%lld, %lld, %lld)%s%s%s", (int)i + 1, (int)p->nstages, op_name(s),
                 (long long)s->c, (long long)s->h, (long long)s->w, (long long)s->oc,
                 (long long)s->oh, (long long)s->ow, how,
                 s->op == OP_LOWBIT && s->th ? ", threshold epilogue writes codes" : "",
                 s->bp_pool ? ", 2 x 2 max-pool fused" : "");
    }
}

tsq_status tsq__plan_from_desc(tsq_context *ctx, const tsq__net_desc *d, tsq_plan **out)
{
    builder b;
    tsq_plan *p;
    tsq_status st;
    int32_t i;
    int lowbit = 0;
    for (i = 0; i < d->nstages; i++)
        lowbit |= d->stages[i].kind == TSQ__STAGE_LOWBIT;
    if (!lowbit)
        return tsq__fail(&ctx->obj, TSQ_ERR_STATE,
                         "plan_create: the net has no low-bit layer (not converted: run "
                         "tsq_net_fit_transform first)");
    if (d->in_ndim != 1 && d->in_ndim != 3)
        return tsq__fail(&ctx->obj, TSQ_ERR_UNSUPPORTED,
                         "plan_create: input samples must be (C,H,W) or (F)");
    p = tsq__calloc(ctx, 1, sizeof *p);
    if (!p)
        return tsq__fail(&ctx->obj, TSQ_ERR_NO_MEMORY, "plan_create: out of memory");
    tsq__object_init(&p->obj, ctx);
    p->cpu = ctx->cpu;
    memset(&b, 0, sizeof b);
    b.ctx = ctx;
    b.plan = p;
    b.c = d->in_shape[0];
    b.h = d->in_ndim == 3 ? d->in_shape[1] : 1;
    b.w = d->in_ndim == 3 ? d->in_shape[2] : 1;
    p->in_numel = b.c * b.h * b.w;
    st = build(&b, d);
    if (st == TSQ_OK)
        st = tsq__plan_bits_link(ctx, p);
    if (st != TSQ_OK) {
        tsq_plan_destroy(p);
        return st;
    }
    p->out_numel = b.c * b.h * b.w;
    log_stages(ctx, p);
    tsq__clear(&ctx->obj);
    *out = p;
    return TSQ_OK;
}

tsq_status tsq_plan_get(const tsq_plan *plan, int32_t key, int64_t *value)
{
    if (!plan || !value)
        return TSQ_ERR_NULL;
    switch (key) {
    case TSQ_PLAN_LOWBIT_LAYERS: *value = plan->lowbit; return TSQ_OK;
    case TSQ_PLAN_FUSED_THRESHOLDS: *value = plan->fused; return TSQ_OK;
    case TSQ_PLAN_PACKED_BYTES: *value = plan->packed_bytes; return TSQ_OK;
    case TSQ_PLAN_PACKED_FP32_BYTES: *value = plan->packed_fp32; return TSQ_OK;
    case TSQ_PLAN_FLOAT_BYTES: *value = plan->float_bytes; return TSQ_OK;
    case TSQ_PLAN_INPUT_SIZE: *value = plan->in_numel; return TSQ_OK;
    case TSQ_PLAN_OUTPUT_SIZE: *value = plan->out_numel; return TSQ_OK;
    case TSQ_PLAN_STAGES: *value = plan->nstages; return TSQ_OK;
    default: return TSQ_ERR_INVALID;
    }
}
