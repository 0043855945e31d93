/*
 * The exact best low-bit approximation of full-precision weights, which
 * starts every fit (docs/method.md §3.5):
 *
 *     min over alpha > 0, q in S^d   || w - alpha q ||^2
 *
 * For a fixed alpha the best q rounds each w_j / alpha to the nearest
 * element of S; for a fixed q the best alpha is q.w / q.q, leaving the error
 * ||w||^2 - (q.w)^2 / q.q. So the optimum is among the q that rounding
 * produces for some alpha, and q only changes where alpha crosses a value
 * w_j / m, m a midpoint between neighbouring elements of S. Sweeping alpha
 * down from infinity through those breakpoints (merged from the d
 * coordinates with a heap) visits every such q; the best score
 * (q.w)^2 / q.q wins. For ternary S this is the method's rule: sort |w|, keep
 * the top r maximising (sum of the top r)^2 / r, alpha their mean.
 * Cost O(E log d) for E breakpoints (d for ternary, d (|S| - 1) at most).
 */
#include "regressor_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Per coordinate: the index of its current element in S and the direction
 * (+1, -1, 0) in which it moves as alpha decreases. The heap holds the next
 * breakpoint of every coordinate that has one. */
typedef struct sweep_state {
    const tsq__alphabet *a;
    const double *w;
    int64_t d, stride;
    int64_t *index, *heap_j, heap_n;
    int32_t *dir;
    double *heap_alpha;
} sweep_state;

size_t tsq__lowbit_scratch_bytes(int64_t d)
{
    return (size_t)d * (2 * sizeof(int64_t) + sizeof(double) + sizeof(int32_t));
}

/* Starting element for u -> 0 with the sign of w_j: the one nearest 0, ties
 * toward the side that w_j / alpha approaches from. */
static int64_t start_index(const tsq__alphabet *a, double wj)
{
    int64_t i, best = 0;
    for (i = 1; i < a->count; i++) {
        int32_t v = a->values[i], b = a->values[best];
        if (abs(v) < abs(b) || (abs(v) == abs(b) && (wj >= 0.0 ? v > b : v < b)))
            best = i;
    }
    return best;
}

/* alpha at which coordinate j leaves its current element, or 0 if never. */
static double next_breakpoint(const sweep_state *s, int64_t j)
{
    int64_t i = s->index[j], n = s->a->count;
    double wj = s->w[j * s->stride], mid;
    if (s->dir[j] > 0 && i + 1 < n)
        mid = 0.5 * (s->a->values[i] + s->a->values[i + 1]);
    else if (s->dir[j] < 0 && i > 0)
        mid = 0.5 * (s->a->values[i - 1] + s->a->values[i]);
    else
        return 0.0;
    return wj / mid; /* mid has the sign of w_j, so this is > 0 */
}

/* Heap order: larger alpha first, ties by smaller coordinate, so that the
 * replay below visits the very same sequence. */
static int heap_before(const sweep_state *s, int64_t x, int64_t y)
{
    if (s->heap_alpha[x] != s->heap_alpha[y])
        return s->heap_alpha[x] > s->heap_alpha[y];
    return s->heap_j[x] < s->heap_j[y];
}

static void heap_swap(sweep_state *s, int64_t x, int64_t y)
{
    double ta = s->heap_alpha[x];
    int64_t tj = s->heap_j[x];
    s->heap_alpha[x] = s->heap_alpha[y];
    s->heap_j[x] = s->heap_j[y];
    s->heap_alpha[y] = ta;
    s->heap_j[y] = tj;
}

static void heap_push(sweep_state *s, double alpha, int64_t j)
{
    int64_t i = s->heap_n++;
    s->heap_alpha[i] = alpha;
    s->heap_j[i] = j;
    while (i > 0 && heap_before(s, i, (i - 1) / 2)) {
        heap_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static int64_t heap_pop(sweep_state *s)
{
    int64_t top = s->heap_j[0], i = 0;
    s->heap_n--;
    s->heap_alpha[0] = s->heap_alpha[s->heap_n];
    s->heap_j[0] = s->heap_j[s->heap_n];
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->heap_n && heap_before(s, l, m))
            m = l;
        if (r < s->heap_n && heap_before(s, r, m))
            m = r;
        if (m == i)
            break;
        heap_swap(s, i, m);
        i = m;
    }
    return top;
}

/* Puts every coordinate at its alpha = infinity element; returns q.w and q.q. */
static void reset(sweep_state *s, double *dot, double *nn)
{
    int64_t j;
    *dot = 0.0;
    *nn = 0.0;
    s->heap_n = 0;
    for (j = 0; j < s->d; j++) {
        double wj = s->w[j * s->stride], bp;
        int32_t v;
        s->dir[j] = wj > 0.0 ? 1 : wj < 0.0 ? -1 : 0;
        s->index[j] = start_index(s->a, wj);
        v = s->a->values[s->index[j]];
        *dot += v * wj;
        *nn += (double)v * v;
        bp = next_breakpoint(s, j);
        if (bp > 0.0)
            heap_push(s, bp, j);
    }
}

/* Moves the coordinate with the next breakpoint one element on. */
static void advance(sweep_state *s, double *dot, double *nn)
{
    int64_t j = heap_pop(s);
    double wj = s->w[j * s->stride], bp;
    int32_t before = s->a->values[s->index[j]], after;
    s->index[j] += s->dir[j];
    after = s->a->values[s->index[j]];
    *dot += (double)(after - before) * wj;
    *nn += (double)after * after - (double)before * before;
    bp = next_breakpoint(s, j);
    if (bp > 0.0)
        heap_push(s, bp, j);
}

static double score(double dot, double nn)
{
    return dot > 0.0 && nn > 0.0 ? dot * dot / nn : -1.0;
}

double tsq__lowbit_approx(const tsq__alphabet *a, const double *w, int64_t d, int64_t stride,
                          int8_t *q, double *alpha, void *scratch)
{
    sweep_state s;
    unsigned char *p = scratch;
    double dot, nn, best, ww = 0.0;
    int64_t j, events = 0, best_events = 0;

    s.a = a;
    s.w = w;
    s.d = d;
    s.stride = stride;
    s.index = (int64_t *)p;
    s.heap_j = (int64_t *)(p + (size_t)d * sizeof(int64_t));
    s.heap_alpha = (double *)(p + (size_t)d * 2 * sizeof(int64_t));
    s.dir = (int32_t *)(p + (size_t)d * (2 * sizeof(int64_t) + sizeof(double)));

    reset(&s, &dot, &nn);
    best = score(dot, nn);
    while (s.heap_n > 0) {
        advance(&s, &dot, &nn);
        events++;
        if (score(dot, nn) > best) {
            best = score(dot, nn);
            best_events = events;
        }
    }
    /* Replay up to the best state; recompute its sums exactly. */
    reset(&s, &dot, &nn);
    for (events = 0; events < best_events; events++)
        advance(&s, &dot, &nn);
    dot = 0.0;
    nn = 0.0;
    for (j = 0; j < d; j++) {
        double wj = w[j * stride];
        int32_t v = a->values[s.index[j]];
        q[j] = (int8_t)v;
        dot += v * wj;
        nn += (double)v * v;
        ww += wj * wj;
    }
    if (dot > 0.0 && nn > 0.0) {
        *alpha = dot / nn;
        return fmax(ww - dot * dot / nn, 0.0);
    }
    /* No q correlates positively with w (w = 0, or an alphabet without 0 or
     * without w's signs): the infimum is at alpha -> 0. Keep alpha positive
     * and negligible; the first refit on data sets it. */
    *alpha = 1e-12 * (ww > 0.0 ? sqrt(ww) : 1.0);
    return ww - 2.0 * *alpha * dot + *alpha * *alpha * nn;
}
