/* Streaming JSONL reader: one line at a time, constant memory apart from the longest line.
 * A file whose first non-blank byte is '[' is read as one JSON array instead (loaded whole: ProcessBench and
 * other datasets ship that way); each element is handed out as a compact one-line record. */
#include "base/base.h"
#include <jansson.h>
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
    json_t *array; /* array mode: the parsed file */
    size_t next;   /* array mode: next element */
};

/* Peeks at the first non-blank byte; when it is '[' loads the rest as a JSON array. */
static int detect_array(fp_jsonl_reader *r) {
    int c;
    while ((c = getc(r->f)) == ' ' || c == '\t' || c == '\r' || c == '\n' || c == 0xEF || c == 0xBB || c == 0xBF) {}
    if (c == EOF) return FP_OK;
    ungetc(c, r->f);
    if (c != '[') return FP_OK;
    json_error_t err;
    r->array = json_loadf(r->f, JSON_ALLOW_NUL, &err);
    if (!r->array) return fp_errorf(FP_EPARSE, "%s:%d: malformed JSON array at column %d: %s", r->path, err.line, err.column, err.text);
    if (!json_is_array(r->array)) return fp_errorf(FP_EPARSE, "%s: not a JSON array", r->path);
    return FP_OK;
}

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
    int rc = detect_array(r);
    if (rc) { fp_jsonl_close(r); return rc; }
    *out = r;
    return FP_OK;
}

int fp_jsonl_next_line(fp_jsonl_reader *r, const char **line, size_t *len) {
    if (r->array) {
        if (r->next >= json_array_size(r->array)) return FP_ERANGE;
        char *s = json_dumps(json_array_get(r->array, r->next++), JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
        if (!s) return fp_errorf(FP_ENOMEM, "%s: cannot serialise element %zu", r->path, r->next);
        free(r->line);
        r->line = s;
        r->lineno = (long)r->next;
        *line = s;
        *len = strlen(s);
        return FP_OK;
    }
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
    json_decref(r->array);
    free(r);
}
