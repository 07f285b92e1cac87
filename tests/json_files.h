/* Reading back what a command wrote: JSON Lines files and byte comparison.  Include after harness.h. */
#ifndef FP_TEST_JSON_FILES_H
#define FP_TEST_JSON_FILES_H
#include "base/json.h"
#include <jansson.h>

/* Every line of a JSON Lines file parsed, in order (a line that does not parse is a NULL element): a new
 * array, empty when the file cannot be opened. */
__attribute__((unused)) static json_t *th_load_lines(const char *path) {
    json_t *arr = json_array();
    fp_jsonl_reader *r;
    if (fp_jsonl_open(&r, path)) return arr;
    const char *line;
    size_t len;
    while (fp_jsonl_next_line(r, &line, &len) == FP_OK) json_array_append_new(arr, json_loadb(line, len, 0, NULL));
    fp_jsonl_close(r);
    return arr;
}

/* 1 when both files can be read and hold the same bytes. */
__attribute__((unused)) static int th_same_file(const char *a, const char *b) {
    char *da, *db;
    size_t la, lb;
    if (fp_read_file(a, &da, &la)) return 0;
    if (fp_read_file(b, &db, &lb)) { free(da); return 0; }
    int same = la == lb && !memcmp(da, db, la);
    free(da);
    free(db);
    return same;
}
#endif
