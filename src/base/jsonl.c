/* Streaming JSONL reader: one line at a time, constant memory apart from the longest line. */
#include "base/base.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fp_jsonl_reader {
    FILE *f;
    char *path;
    char *line;
    size_t cap;
    long lineno;
    int owns;
};

int fp_jsonl_open(fp_jsonl_reader **out, const char *path) {
    *out = NULL;
    fp_jsonl_reader *r = fp_calloc(1, sizeof *r);
    if (!r) return FP_ENOMEM;
    if (!path || !strcmp(path, "-")) {
        r->f = stdin;
        r->path = fp_strdup("<stdin>");
    } else {
        r->f = fopen(path, "rb");
        if (!r->f) {
            int e = fp_errorf(FP_EIO, "%s: cannot open: %s", path, strerror(errno));
            free(r);
            return e;
        }
        r->owns = 1;
        r->path = fp_strdup(path);
    }
    if (!r->path) { fp_jsonl_close(r); return FP_ENOMEM; }
    *out = r;
    return FP_OK;
}

int fp_jsonl_next_line(fp_jsonl_reader *r, const char **line, size_t *len) {
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->line, &r->cap, r->f);
        if (n < 0) {
            if (ferror(r->f)) return fp_errorf(FP_EIO, "%s:%ld: read error: %s", r->path, r->lineno + 1, strerror(errno));
            return FP_ERANGE;
        }
        r->lineno++;
        size_t k = (size_t)n;
        while (k > 0 && (r->line[k - 1] == '\n' || r->line[k - 1] == '\r')) k--;
        size_t i = 0;
        while (i < k && (r->line[i] == ' ' || r->line[i] == '\t')) i++;
        if (i == k) continue; /* blank lines are not records */
        r->line[k] = 0;
        *line = r->line;
        *len = k;
        return FP_OK;
    }
}

long fp_jsonl_line_number(const fp_jsonl_reader *r) { return r->lineno; }
const char *fp_jsonl_path(const fp_jsonl_reader *r) { return r->path; }

void fp_jsonl_close(fp_jsonl_reader *r) {
    if (!r) return;
    if (r->owns && r->f) fclose(r->f);
    free(r->line);
    free(r->path);
    free(r);
}
