/* A progress bar (records, tokens/s, ETA) drawn on the stream the caller gives; silent without one. */
#include "base/base.h"
#include <stdlib.h>
#include <string.h>

struct fp_progress {
    char label[32];
    long total, done, tokens;
    double start, last_draw;
    FILE *out; /* NULL: silent */
};

fp_progress *fp_progress_new(const char *label, long total, FILE *out) {
    fp_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->total = total;
    p->out = out;
    p->start = fp_now();
    return p;
}

static void draw(fp_progress *p, int final) {
    double el = fp_now() - p->start;
    double tps = el > 0 ? (double)p->tokens / el : 0;
    char bar[32] = "";
    char eta[32] = "";
    if (p->total > 0) {
        int w = 20, k = (int)((double)w * (double)p->done / (double)p->total);
        if (k > w) k = w;
        for (int i = 0; i < w; i++) bar[i] = i < k ? '#' : '.';
        bar[w] = 0;
        if (p->done > 0 && !final) {
            double rem = el / (double)p->done * (double)(p->total - p->done);
            snprintf(eta, sizeof eta, " ETA %dm%02ds", (int)(rem / 60), (int)rem % 60);
        }
        fprintf(p->out, "\r%s [%s] %ld/%ld  %.0f tok/s%s   ", p->label, bar, p->done, p->total, tps, eta);
    } else {
        fprintf(p->out, "\r%s %ld records  %.0f tok/s  %.0fs   ", p->label, p->done, tps, el);
    }
    if (final) fputc('\n', p->out);
    fflush(p->out);
}

void fp_progress_add(fp_progress *p, long records, long tokens) {
    if (!p) return;
    p->done += records;
    p->tokens += tokens;
    if (!p->out) return;
    double now = fp_now();
    if (now - p->last_draw >= 0.1) {
        p->last_draw = now;
        draw(p, 0);
    }
}

void fp_progress_finish(fp_progress *p) {
    if (!p) return;
    if (p->out) draw(p, 1);
    free(p);
}
