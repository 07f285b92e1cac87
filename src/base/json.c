/* JSON record parsing and writing with errors that name file and line. */
#include "base/json.h"
#include <string.h>

int fp_json_parse_record(json_t **out, const char *line, size_t len, const char *path, long lineno) {
    json_error_t err;
    *out = json_loadb(line, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &err);
    if (!*out) return fp_errorf(FP_EPARSE, "%s:%ld: malformed JSON at column %d: %s", path, lineno, err.column, err.text);
    return FP_OK;
}

int fp_json_write_line(FILE *f, const json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!s) return fp_errorf(FP_ENOMEM, "cannot serialise JSON record");
    int bad = fputs(s, f) < 0 || fputc('\n', f) == EOF;
    free(s);
    return bad ? fp_errorf(FP_EIO, "write failed") : FP_OK;
}

int fp_json_load_file(json_t **out, const char *path) {
    json_error_t err;
    *out = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (!*out) {
        if (err.line < 1) return fp_errorf(FP_EIO, "%s: %s", path, err.text);
        return fp_errorf(FP_EPARSE, "%s:%d:%d: %s", path, err.line, err.column, err.text);
    }
    return FP_OK;
}

int fp_json_write_extended(FILE *f, const char *line, size_t len, const json_t *record, const json_t *added) {
    int clash = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)added, key, val) if (json_object_get(record, key)) clash = 1;
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r' || line[len - 1] == '\n')) len--;
    if (clash || !len || line[len - 1] != '}' || !json_is_object(record)) {
        json_t *merged = json_deep_copy(record);
        if (!merged || json_object_update(merged, (json_t *)added)) { json_decref(merged); return fp_errorf(FP_ENOMEM, "cannot merge record"); }
        int rc = fp_json_write_line(f, merged);
        json_decref(merged);
        return rc;
    }
    char *extra = json_dumps(added, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!extra) return fp_errorf(FP_ENOMEM, "cannot serialise JSON record");
    size_t elen = strlen(extra);
    int bad = fwrite(line, 1, len - 1, f) != len - 1;
    if (!bad && elen > 2) {
        if (json_object_size(record) > 0) bad |= fputc(',', f) == EOF;
        bad |= fwrite(extra + 1, 1, elen - 1, f) != elen - 1; /* members and the closing brace */
    } else if (!bad) bad |= fputc('}', f) == EOF;
    bad |= fputc('\n', f) == EOF;
    free(extra);
    return bad ? fp_errorf(FP_EIO, "write failed") : FP_OK;
}

const char *fp_json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}
