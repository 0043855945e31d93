/* Progress of long stages: a bar with ETA on a terminal, plain lines in a log. */
#ifndef FMNIST_PROGRESS_H
#define FMNIST_PROGRESS_H
#include <stdint.h>

typedef struct progress {
    char label[48];
    int64_t total, done;
    double start, last_print;
    int tty;
    int last_decile;
} progress;

double progress_now(void);
void progress_start(progress *p, const char *label, int64_t total);
/* `note` (may be NULL) is shown after the bar, e.g. the running loss. */
void progress_update(progress *p, int64_t done, const char *note);
void progress_finish(progress *p, const char *note);
#endif
