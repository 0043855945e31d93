/* Writing the demo's table, JSON and HTML/SVG report: every chart has a
 * title saying what it shows and axes with units. */
#include "report.h"

#include <math.h>
#include <string.h>

void report_init(report *r, const char *title)
{
    memset(r, 0, sizeof *r);
    snprintf(r->title, sizeof r->title, "%s", title);
}

report_stage *report_add_stage(report *r, const char *key, const char *label)
{
    report_stage *s;
    if (r->nstages >= REPORT_MAX_STAGES)
        return NULL;
    s = &r->stages[r->nstages++];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->label, sizeof s->label, "%s", label);
    s->accuracy = -1;
    return s;
}

report_layer *report_add_layer(report *r, const char *name)
{
    report_layer *l;
    if (r->nlayers >= REPORT_MAX_LAYERS)
        return NULL;
    l = &r->layers[r->nlayers++];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->code_agreement = -1;
    return l;
}

void report_layer_histogram(report_layer *l, const float *x, int64_t n, double lo, double hi)
{
    int64_t i;
    l->hist_lo = lo;
    l->hist_hi = hi;
    memset(l->hist, 0, sizeof l->hist);
    if (!(hi > lo))
        return;
    for (i = 0; i < n; i++) {
        double t = ((double)x[i] - lo) / (hi - lo) * REPORT_HIST_BINS;
        int b;
        if (!(t >= 0) || t >= REPORT_HIST_BINS)
            continue;
        b = (int)t;
        l->hist[b] += 1;
    }
}

static void human_bytes(double b, char *out, size_t cap)
{
    if (b >= 1 << 20)
        snprintf(out, cap, "%.2f MiB", b / (1 << 20));
    else
        snprintf(out, cap, "%.1f KiB", b / 1024);
}

void report_print_table(const report *r, FILE *out)
{
    int i;
    fprintf(out, "\n%-46s %9s %12s %9s\n", "stage", "test acc", "weights", "time");
    for (i = 0; i < 46 + 9 + 12 + 9 + 3; i++)
        fputc('-', out);
    fputc('\n', out);
    for (i = 0; i < r->nstages; i++) {
        const report_stage *s = &r->stages[i];
        char acc[16] = "-", bytes[32] = "-";
        if (s->accuracy >= 0)
            snprintf(acc, sizeof acc, "%.2f%%", s->accuracy);
        if (s->weight_bytes > 0)
            human_bytes(s->weight_bytes, bytes, sizeof bytes);
        fprintf(out, "%-46s %9s %12s %8.1fs\n", s->label, acc, bytes, s->seconds);
    }
    fputc('\n', out);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

int report_write_json(const report *r, const char *path)
{
    int i, j;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\n  \"title\": ");
    json_string(f, r->title);
    fprintf(f, ",\n  \"machine\": ");
    json_string(f, r->machine);
    fprintf(f, ",\n  \"command\": ");
    json_string(f, r->command);
    for (i = 0; i < r->nstages; i++) {
        fprintf(f, ",\n  \"%s_acc\": ", r->stages[i].key);
        if (r->stages[i].accuracy >= 0)
            fprintf(f, "%.4f", r->stages[i].accuracy);
        else
            fprintf(f, "null");
    }
    fprintf(f, ",\n  \"stages\": [");
    for (i = 0; i < r->nstages; i++) {
        const report_stage *s = &r->stages[i];
        fprintf(f, "%s\n    {\"key\": ", i ? "," : "");
        json_string(f, s->key);
        fprintf(f, ", \"label\": ");
        json_string(f, s->label);
        fprintf(f, ", \"accuracy\": ");
        if (s->accuracy >= 0)
            fprintf(f, "%.4f", s->accuracy);
        else
            fprintf(f, "null");
        fprintf(f, ", \"weight_bytes\": %.0f, \"seconds\": %.3f}", s->weight_bytes, s->seconds);
    }
    fprintf(f, "\n  ],\n  \"layers\": [");
    for (i = 0; i < r->nlayers; i++) {
        const report_layer *l = &r->layers[i];
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        json_string(f, l->name);
        fprintf(f, ", \"eps\": %.6g, \"delta\": %.6g, \"levels\": %d, \"code_agreement\": %.6g, "
                   "\"objective\": [",
                l->eps, l->delta, (int)l->levels, l->code_agreement);
        for (j = 0; j < l->rounds; j++)
            fprintf(f, "%s%.6g", j ? ", " : "", l->objective[j]);
        fprintf(f, "]}");
    }
    fprintf(f, "\n  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- SVG charts ----
 * Every chart is one <svg> with a title that says what it shows (wrapped
 * onto a second line rather than cut), axes with tick values and a label
 * naming the quantity and its unit. Sizes are fixed, in CSS pixels. */

#define CH_W 440.0   /* width of a layer chart */
#define CH_H 270.0
#define CH_L 64.0    /* plot margins: left (y ticks and label), right, top (title), bottom */
#define CH_R 14.0
#define CH_T 46.0
#define CH_B 46.0
#define FONT "font-family='DejaVu Sans, Arial, sans-serif'"

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '\'')
            fputs("&#39;", f);
        else
            fputc(*s, f);
    }
}

/* The title, in at most two lines of at most `cols` characters, split at
 * the last space that fits (a title too long even for two lines is kept
 * whole on the second: it wraps no further, but nothing is cut). */
static void svg_title(FILE *f, double x, const char *title, int cols)
{
    size_t n = strlen(title), cut = n;
    if ((int)n > cols) {
        cut = (size_t)cols;
        while (cut > 0 && title[cut] != ' ')
            cut--;
        if (cut == 0)
            cut = n;
    }
    fprintf(f, "<text x='%.0f' y='17' font-size='13' font-weight='bold' %s>", x, FONT);
    for (size_t i = 0; i < cut; i++) {
        char c[2] = {title[i], 0};
        html_text(f, c);
    }
    fputs("</text>\n", f);
    if (cut < n) {
        fprintf(f, "<text x='%.0f' y='34' font-size='13' font-weight='bold' %s>", x, FONT);
        html_text(f, title + cut + 1);
        fputs("</text>\n", f);
    }
}

static void svg_open(FILE *f, double w, double h, const char *title)
{
    fprintf(f, "<svg width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
               "xmlns='http://www.w3.org/2000/svg' style='margin:6px'>\n"
               "<rect width='100%%' height='100%%' fill='white' stroke='#bbb'/>\n",
            w, h, w, h);
    svg_title(f, 10, title, (int)((w - 20) / 7.6));
}

/* A "nice" tick step for a range: 1, 2 or 5 times a power of ten. */
static double tick_step(double range, int want)
{
    double raw = range / (want > 0 ? want : 1), p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* Axes of the plot box (x0, y0) - (x1, y1), y1 the bottom: lines, ticks
 * with values from lo to hi on x (xlo..xhi) and y (ylo..yhi) unless the
 * matching tick count is 0, and the axis labels. */
typedef struct axes {
    double x0, y0, x1, y1, xlo, xhi, ylo, yhi;
} axes;

static double ax_x(const axes *a, double v)
{
    return a->x0 + (v - a->xlo) / (a->xhi - a->xlo) * (a->x1 - a->x0);
}

static double ax_y(const axes *a, double v)
{
    return a->y1 - (v - a->ylo) / (a->yhi - a->ylo) * (a->y1 - a->y0);
}

static void svg_axes(FILE *f, const axes *a, int xticks, int yticks, const char *xlabel,
                     const char *ylabel)
{
    double v, step;
    fprintf(f, "<path d='M%.1f,%.1f V%.1f H%.1f' fill='none' stroke='#333'/>\n", a->x0, a->y0,
            a->y1, a->x1);
    if (xticks > 0) {
        step = tick_step(a->xhi - a->xlo, xticks);
        for (v = ceil(a->xlo / step - 1e-9) * step; v <= a->xhi + step * 1e-6; v += step) {
            double x = ax_x(a, v);
            fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>"
                       "<text x='%.1f' y='%.1f' font-size='10' text-anchor='middle' %s>%g</text>\n",
                    x, a->y1, x, a->y1 + 4, x, a->y1 + 15, FONT, fabs(v) < step * 1e-6 ? 0 : v);
        }
    }
    if (yticks > 0) {
        step = tick_step(a->yhi - a->ylo, yticks);
        for (v = ceil(a->ylo / step - 1e-9) * step; v <= a->yhi + step * 1e-6; v += step) {
            double y = ax_y(a, v);
            fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>"
                       "<text x='%.1f' y='%.1f' font-size='10' text-anchor='end' %s>%.4g</text>\n",
                    a->x0 - 4, y, a->x0, y, a->x0 - 6, y + 3.5, FONT,
                    fabs(v) < step * 1e-6 ? 0 : v);
        }
    }
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='middle' %s>", (a->x0 + a->x1) / 2,
            a->y1 + 32, FONT);
    html_text(f, xlabel);
    fprintf(f, "</text>\n<text transform='translate(%.1f,%.1f) rotate(-90)' font-size='11' "
               "text-anchor='middle' %s>", 14.0, (a->y0 + a->y1) / 2, FONT);
    html_text(f, ylabel);
    fputs("</text>\n", f);
}

static void svg_histogram(FILE *f, const report_layer *l)
{
    axes a = {CH_L, CH_T, CH_W - CH_R, CH_H - CH_B, l->hist_lo, l->hist_hi, 0, 1};
    double maxc = 0, bw = (a.x1 - a.x0) / REPORT_HIST_BINS;
    char title[160];
    int i, k;
    for (i = 0; i < REPORT_HIST_BINS; i++)
        if (l->hist[i] > maxc)
            maxc = l->hist[i];
    snprintf(title, sizeof title, "%s: where the step-1 pre-activations fall, eps = %.3f, "
             "levels k*delta, delta = %.3f", l->name, l->eps, l->delta);
    svg_open(f, CH_W, CH_H, title);
    if (!(a.xhi > a.xlo)) {
        fputs("</svg>\n", f);
        return;
    }
    for (i = 0; i < REPORT_HIST_BINS && maxc > 0; i++) {
        /* square-root scale: the spike of exact zeros would flatten the rest */
        double h = sqrt(l->hist[i] / maxc) * (a.y1 - a.y0);
        fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='#6a8fc7'/>\n",
                a.x0 + i * bw, a.y1 - h, bw * 0.9, h);
    }
    /* y ticks at counts c, placed at sqrt(c / max) */
    fprintf(f, "<path d='M%.1f,%.1f V%.1f' stroke='#333'/>\n", a.x0, a.y0, a.y1);
    for (k = 0; k <= 4 && maxc > 0; k++) {
        double c = maxc * (k / 4.0) * (k / 4.0), y = ax_y(&a, sqrt(c / maxc));
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#333'/>"
                   "<text x='%.1f' y='%.1f' font-size='10' text-anchor='end' %s>%.0f</text>\n",
                a.x0 - 4, y, a.x0, y, a.x0 - 6, y + 3.5, FONT, c);
    }
    svg_axes(f, &a, 6, 0, "pre-activation (batch-norm output, unitless)",
             "samples per bin (square-root scale)");
    fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#d22' stroke-width='2'/>\n",
            ax_x(&a, l->eps), a.y0, ax_x(&a, l->eps), a.y1);
    for (k = 1; k <= l->levels && k < REPORT_MAX_LEVELS; k++) {
        double lx = ax_x(&a, k * l->delta);
        if (lx > a.x1)
            break;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#2a2' "
                   "stroke-width='1.5' stroke-dasharray='4,3'/>\n", lx, a.y0, lx, a.y1);
    }
    fprintf(f, "<rect x='%.1f' y='%.1f' width='146' height='30' fill='white' opacity='0.85'/>",
            a.x1 - 154, a.y0 + 1);
    fprintf(f, "<g font-size='10' %s><line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#d22' "
               "stroke-width='2'/><text x='%.1f' y='%.1f'>eps: below it, code 0</text>"
               "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#2a2' stroke-width='1.5' "
               "stroke-dasharray='4,3'/><text x='%.1f' y='%.1f'>levels k*delta</text></g>\n",
            FONT, a.x1 - 150, a.y0 + 8, a.x1 - 136, a.y0 + 8, a.x1 - 132, a.y0 + 11,
            a.x1 - 150, a.y0 + 22, a.x1 - 136, a.y0 + 22, a.x1 - 132, a.y0 + 25);
    fputs("</svg>\n", f);
}

static void svg_objective(FILE *f, const report_layer *l)
{
    axes a = {CH_L, CH_T, CH_W - CH_R, CH_H - CH_B, 0, 1, INFINITY, -INFINITY};
    char title[160], ylabel[64];
    double scale = 1;
    int j, e;
    if (l->rounds < 1)
        return;
    for (j = 0; j < l->rounds; j++) {
        if (l->objective[j] < a.ylo) a.ylo = l->objective[j];
        if (l->objective[j] > a.yhi) a.yhi = l->objective[j];
    }
    /* large or tiny values: ticks in units of 10^e, named in the label */
    e = a.yhi > 0 ? (int)floor(log10(a.yhi)) : 0;
    if (e >= 4 || e <= -3)
        scale = pow(10, e);
    a.ylo /= scale;
    a.yhi /= scale;
    {   /* y from a round number below the minimum, so a small decrease shows */
        double step = tick_step(a.yhi - a.ylo > 0 ? a.yhi - a.ylo : fabs(a.yhi) + 1, 4);
        a.ylo = floor(a.ylo / step) * step;
        a.yhi = ceil(a.yhi / step) * step;
        if (!(a.yhi > a.ylo))
            a.yhi = a.ylo + step;
    }
    a.xhi = l->rounds > 1 ? l->rounds - 1 : 1;
    snprintf(title, sizeof title, "%s: step-2 objective per regressor iterate, %.4g -> %.4g",
             l->name, l->objective[0], l->objective[l->rounds - 1]);
    if (scale != 1)
        snprintf(ylabel, sizeof ylabel, "squared error (x 1e%d)", e);
    else
        snprintf(ylabel, sizeof ylabel, "squared error");
    svg_open(f, CH_W, CH_H, title);
    svg_axes(f, &a, l->rounds > 1 ? (l->rounds - 1 < 8 ? l->rounds - 1 : 8) : 1, 4,
             "iterate (0 = start, then one per round)", ylabel);
    fprintf(f, "<polyline fill='none' stroke='#c60' stroke-width='2' points='");
    for (j = 0; j < l->rounds; j++)
        fprintf(f, "%.1f,%.1f ", ax_x(&a, j), ax_y(&a, l->objective[j] / scale));
    fputs("'/>\n", f);
    for (j = 0; j < l->rounds; j++)
        fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3' fill='#c60'/>\n", ax_x(&a, j),
                ax_y(&a, l->objective[j] / scale));
    fputs("</svg>\n", f);
}

static void svg_accuracy(FILE *f, const report *r)
{
    const double W = 900, rowh = 24, labw = 380;
    axes a = {labw, CH_T, W - 70, CH_T + rowh * r->nstages, 100, 100, 0, 1};
    double H = a.y1 + CH_B;
    int i;
    for (i = 0; i < r->nstages; i++)
        if (r->stages[i].accuracy >= 0 && r->stages[i].accuracy < a.xlo)
            a.xlo = r->stages[i].accuracy;
    a.xlo = floor(a.xlo / 5) * 5 - 5;
    if (a.xlo < 0)
        a.xlo = 0;
    svg_open(f, W, H, "Test accuracy of the network after each stage (bars start at the axis' "
                      "first value, not at 0)");
    for (i = 0; i < r->nstages; i++) {
        const report_stage *s = &r->stages[i];
        double y = a.y0 + i * rowh;
        fprintf(f, "<text x='%.0f' y='%.1f' font-size='12' text-anchor='end' %s>", labw - 8,
                y + 16, FONT);
        html_text(f, s->label);
        fputs("</text>\n", f);
        if (s->accuracy < 0)
            continue;
        fprintf(f, "<rect x='%.0f' y='%.1f' width='%.1f' height='17' fill='#4a7'/>"
                   "<text x='%.1f' y='%.1f' font-size='12' %s>%.2f%%</text>\n",
                labw, y + 4, ax_x(&a, s->accuracy) - labw, ax_x(&a, s->accuracy) + 4, y + 16,
                FONT, s->accuracy);
    }
    svg_axes(f, &a, 8, 0, "test accuracy (% of the test images classified right)", "");
    fputs("</svg>\n", f);
}

int report_write_html(const report *r, const char *path)
{
    int i;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>", f);
    html_text(f, r->title);
    fputs("</title></head>\n<body style='font-family:sans-serif;max-width:1400px'>\n<h1>", f);
    html_text(f, r->title);
    fputs("</h1>\n<p>", f);
    html_text(f, r->machine);
    fputs("</p>\n<p><code>", f);
    html_text(f, r->command);
    fputs("</code></p>\n<h2>Accuracy per stage</h2>\n", f);
    svg_accuracy(f, r);
    fputs("<h2>Step 1: activation histograms and the fitted quantizers</h2>\n"
          "<div style='display:flex;flex-wrap:wrap'>\n", f);
    for (i = 0; i < r->nlayers; i++)
        svg_histogram(f, &r->layers[i]);
    fputs("</div>\n<h2>Step 2: the regressor's objective per layer</h2>\n<p>The objective "
          "is the squared difference between the step-1 outputs and the quantized outputs of "
          "the low-bit layer, in the layer's output units squared, summed over the samples "
          "and channels of the fit.</p>\n<div style='display:flex;flex-wrap:wrap'>\n", f);
    /* (the per-chart labels say "squared error" for it) */
    for (i = 0; i < r->nlayers; i++)
        svg_objective(f, &r->layers[i]);
    fputs("</div>\n</body></html>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}
