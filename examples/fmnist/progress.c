#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_start(progress *p, const char *label, int64_t total)
{
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total > 0 ? total : 1;
    p->done = 0;
    p->start = p->last_print = progress_now();
    p->tty = isatty(STDOUT_FILENO);
    p->last_decile = -1;
}

void progress_update(progress *p, int64_t done, const char *note)
{
    double t = progress_now(), frac, eta;
    p->done = done;
    frac = (double)done / (double)p->total;
    eta = frac > 0 ? (t - p->start) * (1 - frac) / frac : 0;
    if (p->tty) {
        /* redraw at most 10 times a second */
        char bar[31];
        int i, fill = (int)(frac * 30);
        if (t - p->last_print < 0.1 && done < p->total)
            return;
        for (i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        printf("\r  %-22s [%s] %3.0f%%  ETA %4.0fs  %s   ", p->label, bar, 100 * frac, eta,
               note ? note : "");
        fflush(stdout);
        p->last_print = t;
    } else {
        /* in a log: one line per tenth of the work */
        int decile = (int)(frac * 10);
        if (decile == p->last_decile)
            return;
        p->last_decile = decile;
        printf("  %s: %3.0f%% (%.0fs elapsed, ETA %.0fs) %s\n", p->label, 100 * frac,
               t - p->start, eta, note ? note : "");
        fflush(stdout);
    }
}

void progress_finish(progress *p, const char *note)
{
    double t = progress_now();
    if (p->tty)
        printf("\r%-100s\r", "");
    printf("  %s: done in %.1fs %s\n", p->label, t - p->start, note ? note : "");
    fflush(stdout);
}
