/*
 * The demo's report: a table on stdout, a JSON file and a self-contained
 * HTML file with inline SVG charts (activation histograms with ε and the
 * levels, the step-2 objective per round, accuracy per stage), each with a
 * title that says what it shows and axes with units.
 */
#ifndef FMNIST_REPORT_H
#define FMNIST_REPORT_H

#include <stdint.h>
#include <stdio.h>

#define REPORT_MAX_STAGES 16
#define REPORT_MAX_LAYERS 16
#define REPORT_HIST_BINS 64
#define REPORT_MAX_ROUNDS 64
#define REPORT_MAX_LEVELS 256

typedef struct report_stage {
    char key[32];      /* JSON key stem, e.g. "fp32" (gives "fp32_acc") */
    char label[64];    /* table label */
    double accuracy;   /* percent on the test set; < 0 if not measured */
    double weight_bytes;
    double seconds;
} report_stage;

typedef struct report_layer {
    char name[32];
    double hist_lo, hist_hi;          /* histogram range of pre-activations */
    double hist[REPORT_HIST_BINS];    /* counts */
    double eps, delta;
    int32_t levels;                   /* 2^n - 1 */
    int32_t rounds;
    double objective[REPORT_MAX_ROUNDS]; /* step-2 objective per iterate (summed over
                                          * samples and channels, regressor.h) */
    double code_agreement;            /* fraction of codes equal to step 1's, or < 0 */
} report_layer;

typedef struct report {
    char title[128];
    char machine[1024];
    char command[512];
    int32_t nstages, nlayers;
    report_stage stages[REPORT_MAX_STAGES];
    report_layer layers[REPORT_MAX_LAYERS];
} report;

void report_init(report *r, const char *title);
report_stage *report_add_stage(report *r, const char *key, const char *label);
report_layer *report_add_layer(report *r, const char *name);
/* Fills a layer's histogram from samples (bounded range [lo, hi]). */
void report_layer_histogram(report_layer *l, const float *x, int64_t n, double lo, double hi);

void report_print_table(const report *r, FILE *out);
int report_write_json(const report *r, const char *path);
int report_write_html(const report *r, const char *path);

#endif
