/* The demo's data: Fashion-MNIST (or any MNIST-format set) in memory,
 * normalised, with shuffled and augmented batches. */
#ifndef FMNIST_DATASET_H
#define FMNIST_DATASET_H

#include <stdint.h>

#include <tsq.h>

#define IMG_H 28
#define IMG_W 28
#define IMG_SIZE (IMG_H * IMG_W)

typedef struct dataset {
    int64_t count;
    float *images;   /* count x 28 x 28, standardised with the training set's pixel statistics */
    float pad;       /* the standardised value of a black pixel */
    int32_t *labels; /* count */
} dataset;

/* Loads train-* and t10k-* files from dir. On error returns -1 with a
 * message in err. `limit_train` / `limit_test` > 0 keep only the first so
 * many images. */
int dataset_load(const char *dir, dataset *train, dataset *test, int64_t limit_train,
                 int64_t limit_test, char *err, int errcap);
void dataset_free(dataset *d);

/* Splits the last `count` images of d off into out (views, not copies). */
void dataset_split_tail(dataset *d, int64_t count, dataset *tail);

/* A small deterministic generator for shuffling and augmentation. */
typedef struct demo_rng {
    uint64_t s;
} demo_rng;
uint32_t demo_rng_next(demo_rng *r);

/* Fills a batch tensor (n x 1 x 28 x 28) and labels from the images at
 * idx[0..n-1]; with augment >= 1 each image is shifted by up to 2 pixels
 * (black-padded), with augment 2 also flipped left-right with
 * probability 1/2. */
void dataset_batch(const dataset *d, const int64_t *idx, int64_t n, int augment, demo_rng *rng,
                   float *x, int32_t *labels);

/* A random permutation of 0..n-1. */
void shuffle_indices(int64_t *idx, int64_t n, demo_rng *rng);

#endif
