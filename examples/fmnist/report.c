/* Writing the demo's table, JSON and HTML/SVG report. */
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

/* ---- SVG charts ---- */

static void svg_histogram(FILE *f, const report_layer *l)
{
    const double W = 360, H = 160, pad = 24;
    double maxc = 0, bw = (W - 2 * pad) / REPORT_HIST_BINS;
    int i;
    for (i = 0; i < REPORT_HIST_BINS; i++)
        if (l->hist[i] > maxc)
            maxc = l->hist[i];
    fprintf(f, "<svg width='%.0f' height='%.0f' xmlns='http://www.w3.org/2000/svg'>\n", W, H);
    fprintf(f, "<rect width='100%%' height='100%%' fill='white' stroke='#ccc'/>\n");
    for (i = 0; i < REPORT_HIST_BINS && maxc > 0; i++) {
        /* square-root scale: the spike of exact zeros would flatten the rest */
        double h = sqrt(l->hist[i] / maxc) * (H - 2 * pad);
        fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='#6a8fc7'/>\n",
                pad + i * bw, H - pad - h, bw * 0.9, h);
    }
    if (l->hist_hi > l->hist_lo) {
        double sx = (W - 2 * pad) / (l->hist_hi - l->hist_lo);
        double x = pad + (l->eps - l->hist_lo) * sx;
        int k;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#d22' "
                   "stroke-width='2'/>\n", x, pad * 0.5, x, H - pad);
        for (k = 1; k <= l->levels && k < REPORT_MAX_LEVELS; k++) {
            double lx = pad + (k * l->delta - l->hist_lo) * sx;
            if (lx > W - pad)
                break;
            fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#2a2' "
                       "stroke-dasharray='3,2'/>\n", lx, pad * 0.5, lx, H - pad);
        }
    }
    fprintf(f, "<text x='%.0f' y='14' font-size='11' font-family='sans-serif'>%s: "
               "&#949;=%.3f (red), levels k&#183;&#948;, &#948;=%.3f (green)</text>\n",
            pad, l->name, l->eps, l->delta);
    fprintf(f, "<text x='%.0f' y='%.0f' font-size='10' font-family='sans-serif'>%.2f</text>"
               "<text x='%.0f' y='%.0f' font-size='10' font-family='sans-serif' "
               "text-anchor='end'>%.2f</text>\n",
            pad, H - 8, l->hist_lo, W - pad, H - 8, l->hist_hi);
    fprintf(f, "</svg>\n");
}

static void svg_objective(FILE *f, const report_layer *l)
{
    const double W = 360, H = 160, pad = 28;
    double lo = INFINITY, hi = -INFINITY;
    int j;
    if (l->rounds < 1)
        return;
    for (j = 0; j < l->rounds; j++) {
        if (l->objective[j] < lo) lo = l->objective[j];
        if (l->objective[j] > hi) hi = l->objective[j];
    }
    if (!(hi > lo))
        hi = lo + 1e-12;
    fprintf(f, "<svg width='%.0f' height='%.0f' xmlns='http://www.w3.org/2000/svg'>\n", W, H);
    fprintf(f, "<rect width='100%%' height='100%%' fill='white' stroke='#ccc'/>\n<polyline "
               "fill='none' stroke='#c60' stroke-width='2' points='");
    for (j = 0; j < l->rounds; j++) {
        double x = pad + (l->rounds > 1 ? j * (W - 2 * pad) / (l->rounds - 1) : 0);
        double y = H - pad - (l->objective[j] - lo) / (hi - lo) * (H - 2 * pad);
        fprintf(f, "%.1f,%.1f ", x, y);
    }
    fprintf(f, "'/>\n<text x='%.0f' y='14' font-size='11' font-family='sans-serif'>%s: "
               "step-2 objective per round (%.4g .. %.4g)</text>\n</svg>\n",
            pad, l->name, lo, hi);
}

static void svg_accuracy(FILE *f, const report *r)
{
    const double W = 720, rowh = 22, pad = 10, labw = 300;
    double H = pad * 2 + rowh * r->nstages, lo = 100;
    int i;
    for (i = 0; i < r->nstages; i++)
        if (r->stages[i].accuracy >= 0 && r->stages[i].accuracy < lo)
            lo = r->stages[i].accuracy;
    lo = floor(lo / 5) * 5 - 5;
    if (lo < 0)
        lo = 0;
    fprintf(f, "<svg width='%.0f' height='%.0f' xmlns='http://www.w3.org/2000/svg'>\n", W, H);
    for (i = 0; i < r->nstages; i++) {
        const report_stage *s = &r->stages[i];
        double y = pad + i * rowh, w;
        fprintf(f, "<text x='%.0f' y='%.1f' font-size='12' font-family='sans-serif'>%s</text>\n",
                pad, y + 15, s->label);
        if (s->accuracy < 0)
            continue;
        w = (s->accuracy - lo) / (100 - lo) * (W - labw - 80);
        fprintf(f, "<rect x='%.0f' y='%.1f' width='%.1f' height='16' fill='#4a7'/>"
                   "<text x='%.1f' y='%.1f' font-size='12' font-family='sans-serif'>"
                   "%.2f%%</text>\n",
                labw, y + 3, w, labw + w + 4, y + 15, s->accuracy);
    }
    fprintf(f, "</svg>\n<p style='font-size:11px'>bars start at %.0f%%</p>\n", lo);
}

int report_write_html(const report *r, const char *path)
{
    int i;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>%s</title></head>\n"
               "<body style='font-family:sans-serif'>\n<h1>%s</h1>\n<p>%s</p>\n"
               "<p><code>%s</code></p>\n<h2>Accuracy per stage</h2>\n",
            r->title, r->title, r->machine, r->command);
    svg_accuracy(f, r);
    fprintf(f, "<h2>Activation histograms (step 1 pre-activations)</h2>\n<div>\n");
    for (i = 0; i < r->nlayers; i++)
        svg_histogram(f, &r->layers[i]);
    fprintf(f, "</div>\n<h2>Step 2: objective per round</h2>\n<div>\n");
    for (i = 0; i < r->nlayers; i++)
        svg_objective(f, &r->layers[i]);
    fprintf(f, "</div>\n</body></html>\n");
    return fclose(f) == 0 ? 0 : -1;
}
