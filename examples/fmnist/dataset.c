/* Loading, normalising and batching the demo's images. */
#include "dataset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx.h"

/* Inputs are standardised with the pixel mean and standard deviation of the
 * loaded training images (on the 0..1 scale), so that any MNIST-format set
 * gets its own; on Fashion-MNIST they are 0.2860 and 0.3530. */

static int load_pair(const char *dir, const char *prefix, dataset *d, int64_t limit, char *err,
                     int errcap)
{
    char path[1024], inner[512];
    idx_array img, lab;
    int64_t i, n;
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    if (idx_load(path, 3, &img, inner, sizeof inner) != 0) {
        snprintf(err, (size_t)errcap, "%s", inner);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (idx_load(path, 1, &lab, inner, sizeof inner) != 0) {
        snprintf(err, (size_t)errcap, "%s", inner);
        idx_free(&img);
        return -1;
    }
    if (img.dims[1] != IMG_H || img.dims[2] != IMG_W || img.count != lab.count) {
        snprintf(err, (size_t)errcap, "%s/%s-*: %lld images of %lldx%lld and %lld labels, "
                 "expected 28x28 images with one label each", dir, prefix,
                 (long long)img.count, (long long)img.dims[1], (long long)img.dims[2],
                 (long long)lab.count);
        idx_free(&img);
        idx_free(&lab);
        return -1;
    }
    n = limit > 0 && limit < img.count ? limit : img.count;
    d->count = n;
    d->images = malloc((size_t)n * IMG_SIZE * sizeof(float));
    d->labels = malloc((size_t)n * sizeof(int32_t));
    if (!d->images || !d->labels) {
        snprintf(err, (size_t)errcap, "out of memory for %lld images", (long long)n);
        idx_free(&img);
        idx_free(&lab);
        return -1;
    }
    for (i = 0; i < n * IMG_SIZE; i++)
        d->images[i] = (float)img.data[i] / 255.0f;
    for (i = 0; i < n; i++) {
        if (lab.data[i] > 9) {
            snprintf(err, (size_t)errcap, "%s: label %d at %lld is not a class 0..9", path,
                     lab.data[i], (long long)i);
            idx_free(&img);
            idx_free(&lab);
            return -1;
        }
        d->labels[i] = lab.data[i];
    }
    idx_free(&img);
    idx_free(&lab);
    return 0;
}

/* Pixel statistics of the training images (in double), applied to both. */
static void standardise(dataset *train, dataset *test)
{
    double sum = 0, sq = 0, n = (double)train->count * IMG_SIZE, mean, sd;
    int64_t i;
    for (i = 0; i < train->count * IMG_SIZE; i++) {
        sum += train->images[i];
        sq += (double)train->images[i] * train->images[i];
    }
    mean = n > 0 ? sum / n : 0;
    sd = n > 0 ? sqrt(sq / n - mean * mean) : 1;
    if (!(sd > 1e-6))
        sd = 1;
    for (i = 0; i < train->count * IMG_SIZE; i++)
        train->images[i] = (float)((train->images[i] - mean) / sd);
    for (i = 0; i < test->count * IMG_SIZE; i++)
        test->images[i] = (float)((test->images[i] - mean) / sd);
    train->pad = test->pad = (float)(-mean / sd);
}

int dataset_load(const char *dir, dataset *train, dataset *test, int64_t limit_train,
                 int64_t limit_test, char *err, int errcap)
{
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    if (load_pair(dir, "train", train, limit_train, err, errcap) != 0)
        return -1;
    if (load_pair(dir, "t10k", test, limit_test, err, errcap) != 0) {
        dataset_free(train);
        return -1;
    }
    standardise(train, test);
    return 0;
}

void dataset_free(dataset *d)
{
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void dataset_split_tail(dataset *d, int64_t count, dataset *tail)
{
    if (count > d->count / 2)
        count = d->count / 2;
    tail->count = count;
    tail->pad = d->pad;
    tail->images = d->images + (d->count - count) * IMG_SIZE;
    tail->labels = d->labels + (d->count - count);
    d->count -= count;
}

uint32_t demo_rng_next(demo_rng *r)
{
    /* a 64-bit LCG, high bits out: plenty for shuffling and flips */
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

void shuffle_indices(int64_t *idx, int64_t n, demo_rng *rng)
{
    int64_t i;
    for (i = 0; i < n; i++)
        idx[i] = i;
    for (i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(((uint64_t)demo_rng_next(rng) << 31 ^ demo_rng_next(rng)) %
                              (uint64_t)(i + 1));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* pad: the standardised value of a black pixel, for the shifted-in border */
static void augment_copy(const float *src, float *dst, float pad, int flip, int dy, int dx)
{
    int y, x;
    for (y = 0; y < IMG_H; y++) {
        for (x = 0; x < IMG_W; x++) {
            int sy = y + dy, sx = x + dx;
            if (flip)
                sx = IMG_W - 1 - sx;
            dst[y * IMG_W + x] =
                (sy < 0 || sy >= IMG_H || sx < 0 || sx >= IMG_W) ? pad : src[sy * IMG_W + sx];
        }
    }
}

void dataset_batch(const dataset *d, const int64_t *idx, int64_t n, int augment, demo_rng *rng,
                   float *x, int32_t *labels)
{
    int64_t i;
    for (i = 0; i < n; i++) {
        const float *src = d->images + idx[i] * IMG_SIZE;
        float *dst = x + i * IMG_SIZE;
        if (augment) {
            uint32_t r = demo_rng_next(rng);
            int flip = augment > 1 ? (int)(r & 1) : 0;
            augment_copy(src, dst, d->pad, flip, (int)((r >> 1) % 5) - 2, (int)((r >> 4) % 5) - 2);
        } else {
            memcpy(dst, src, IMG_SIZE * sizeof(float));
        }
        labels[i] = d->labels[idx[i]];
    }
}
