/* Minimal SVG line chart and histogram writers. */
#include "apps/svg.h"
#include "base/base.h"
#include <errno.h>
#include <math.h>
#include <string.h>

#define W 640
#define H 400
#define ML 64  /* margins */
#define MR 150
#define MT 40
#define MB 56

static const char *palette[] = {"#d62728", "#1f77b4", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e"};

static void esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void header(FILE *f, const char *title) {
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            W, H, W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"15\">", (W - MR + ML) / 2, MT / 2 + 6);
    esc(f, title);
    fputs("</text>\n", f);
}

/* A "nice" tick step for a span with about `want` ticks. */
static double nice_step(double span, int want) {
    if (!(span > 0)) return 1;
    double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
}

static void axes(FILE *f, const char *xlabel, const char *ylabel, double ylo, double yhi) {
    int x0 = ML, x1 = W - MR, y0 = H - MB, y1 = MT;
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", x0, y0, x1, y0);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", x0, y0, x0, y1);
    double st = nice_step(yhi - ylo, 5);
    for (double t = ceil(ylo / st) * st; t <= yhi + st * 1e-9; t += st) {
        double py = y0 - (t - ylo) / (yhi - ylo) * (y0 - y1);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                x0, py, x1, py, x0 - 6, py + 4, fabs(t) < st * 1e-9 ? 0.0 : t);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (x0 + x1) / 2, H - 14);
    esc(f, xlabel);
    fprintf(f, "</text>\n<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">",
            (y0 + y1) / 2, (y0 + y1) / 2);
    esc(f, ylabel);
    fputs("</text>\n", f);
}

static int finish(FILE *f) {
    fputs("</svg>\n", f);
    if (ferror(f)) return fp_errorf(FP_EIO, "SVG write failed: %s", strerror(errno));
    return FP_OK;
}

int fp_svg_line_chart(FILE *f, const char *title, const char *xlabel, const char *ylabel, const double *x,
                      size_t n, const fp_svg_series *series, size_t nseries, int log2_x, double y_lo, double y_hi) {
    if (!f || (n && !x)) return fp_errorf(FP_EINVAL, "svg line chart: bad arguments");
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || (log2_x && x[i] <= 0)) return fp_errorf(FP_EINVAL, "svg line chart: bad x value %g", x[i]);
    if (!(y_lo < y_hi)) {
        y_lo = INFINITY, y_hi = -INFINITY;
        for (size_t s = 0; s < nseries; s++)
            for (size_t i = 0; i < n; i++)
                if (isfinite(series[s].y[i])) {
                    if (series[s].y[i] < y_lo) y_lo = series[s].y[i];
                    if (series[s].y[i] > y_hi) y_hi = series[s].y[i];
                }
        if (!(y_lo <= y_hi)) y_lo = 0, y_hi = 1;
        if (y_lo == y_hi) y_lo -= 0.5, y_hi += 0.5;
    }
    double xlo = 0, xhi = 1;
    if (n) {
        xlo = log2_x ? log2(x[0]) : x[0];
        xhi = log2_x ? log2(x[n - 1]) : x[n - 1];
    }
    if (xlo == xhi) xlo -= 0.5, xhi += 0.5;
    int x0 = ML + 10, x1 = W - MR - 10, y0 = H - MB, y1 = MT;
    header(f, title);
    axes(f, xlabel, ylabel, y_lo, y_hi);
#define PX(v) (x0 + ((log2_x ? log2(v) : (v)) - xlo) / (xhi - xlo) * (x1 - x0))
#define PY(v) (y0 - ((v) - y_lo) / (y_hi - y_lo) * (y0 - y1))
    for (size_t i = 0; i < n; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", PX(x[i]), y0 + 16, x[i]);
    for (size_t s = 0; s < nseries; s++) {
        const char *col = palette[s % (sizeof palette / sizeof palette[0])];
        fprintf(f, "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (size_t i = 0; i < n; i++)
            if (isfinite(series[s].y[i])) fprintf(f, "%.1f,%.1f ", PX(x[i]), PY(series[s].y[i]));
        fputs("\"/>\n", f);
        for (size_t i = 0; i < n; i++)
            if (isfinite(series[s].y[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%g</title></circle>\n",
                        PX(x[i]), PY(series[s].y[i]), col, series[s].y[i]);
        int ly = MT + 10 + 20 * (int)s;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>"
                   "<text x=\"%d\" y=\"%d\">",
                W - MR + 10, ly, W - MR + 30, ly, col, W - MR + 36, ly + 4);
        esc(f, series[s].name);
        fputs("</text>\n", f);
    }
#undef PX
#undef PY
    return finish(f);
}

int fp_svg_histogram(FILE *f, const char *title, const char *xlabel, double lo, double hi, const long *counts,
                     const long *highlight, size_t bins, const char *label_all, const char *label_hl) {
    if (!f || !bins || !counts || !isfinite(lo) || !isfinite(hi) || hi < lo)
        return fp_errorf(FP_EINVAL, "svg histogram: bad arguments");
    long maxc = 1;
    for (size_t b = 0; b < bins; b++) if (counts[b] > maxc) maxc = counts[b];
    header(f, title);
    axes(f, xlabel, "count", 0, (double)maxc);
    int x0 = ML, x1 = W - MR, y0 = H - MB, y1 = MT;
    double bw = (double)(x1 - x0) / (double)bins;
    for (size_t b = 0; b < bins; b++) {
        double h = (double)counts[b] / (double)maxc * (y0 - y1);
        double lo_b = lo + (hi - lo) * (double)b / (double)bins, hi_b = lo + (hi - lo) * (double)(b + 1) / (double)bins;
        fprintf(f, "<rect class=\"bin\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#9ecae1\" "
                   "stroke=\"white\" stroke-width=\"0.5\"><title>[%g, %g): %ld</title></rect>\n",
                x0 + bw * (double)b, y0 - h, bw, h, lo_b, hi_b, counts[b]);
        if (highlight && highlight[b] > 0) {
            double hh = (double)highlight[b] / (double)maxc * (y0 - y1);
            fprintf(f, "<rect class=\"hl\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#e6550d\" "
                       "stroke=\"white\" stroke-width=\"0.5\"><title>%ld</title></rect>\n",
                    x0 + bw * (double)b, y0 - hh, bw, hh, highlight[b]);
        }
    }
    /* x tick labels at the range ends and middle */
    for (int i = 0; i <= 4; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.3g</text>\n", x0 + (x1 - x0) * i / 4.0, y0 + 16,
                lo + (hi - lo) * i / 4.0);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"10\" fill=\"#9ecae1\"/><text x=\"%d\" y=\"%d\">",
            W - MR + 10, MT + 4, W - MR + 30, MT + 13);
    esc(f, label_all);
    fputs("</text>\n", f);
    if (highlight) {
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"10\" fill=\"#e6550d\"/><text x=\"%d\" y=\"%d\">",
                W - MR + 10, MT + 24, W - MR + 30, MT + 33);
        esc(f, label_hl);
        fputs("</text>\n", f);
    }
    return finish(f);
}
