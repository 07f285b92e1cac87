/* Tiny self-contained SVG charts (no dependencies): a line chart for Best-of-N accuracy curves and a
 * histogram with a highlighted subset for selection score distributions (the paper's Fig. 4 shape).
 * Output is one standalone <svg> document; text is XML-escaped. */
#ifndef FP_SVG_H
#define FP_SVG_H
#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *name;  /* legend text */
    const double *y;   /* [n]; NAN points are left out of the line */
} fp_svg_series;

/* x[n] ascending; log2_x spaces x on a log2 axis (x must be > 0).  y axis spans [y_lo, y_hi] (pass
 * y_lo >= y_hi to fit the data).  Each series is a <polyline class="series"> plus one <circle> per point. */
int fp_svg_line_chart(FILE *f, const char *title, const char *xlabel, const char *ylabel, const double *x,
                      size_t n, const fp_svg_series *series, size_t nseries, int log2_x, double y_lo, double y_hi);

/* bins equal-width bins over [lo, hi]: counts[b] all items, highlight[b] (may be NULL) the highlighted
 * part (<= counts[b]).  Emits exactly one <rect class="bin"> per bin (zero-height when empty) and one
 * <rect class="hl"> per bin with a non-zero highlighted count. */
int fp_svg_histogram(FILE *f, const char *title, const char *xlabel, double lo, double hi, const long *counts,
                     const long *highlight, size_t bins, const char *label_all, const char *label_hl);
#endif
