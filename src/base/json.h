/* JSON helpers on top of jansson (the project's one JSON library). */
#ifndef FP_JSON_H
#define FP_JSON_H
#include "base/base.h"
#include <jansson.h>

/* Parses one JSONL record.  NUL characters are allowed through so that the caller can report them by field.
 * Errors (FP_EPARSE) read "<path>:<line>: <what>" (column included). */
int fp_json_parse_record(json_t **out, const char *line, size_t len, const char *path, long lineno);
/* Writes obj compactly on one line followed by '\n' (key order kept; reals with 9 significant digits,
 * which round-trips a float32). */
int fp_json_write_line(FILE *f, const json_t *obj);
/* Writes an input record with extra fields appended: the original bytes of the record are kept (so
 * number formatting and key order of the input survive) and the members of `added` follow.  When the
 * record already has a member named like one of `added`, the merged object is re-serialised instead
 * (added values win).  `record` must be the parsed form of `line`. */
int fp_json_write_extended(FILE *f, const char *line, size_t len, const json_t *record, const json_t *added);
/* "an object", "a list", "a string", "a number", "a boolean" or "null": for error messages. */
const char *fp_json_kind(const json_t *v);
/* Loads a whole JSON file; errors name the file, line and column. */
int fp_json_load_file(json_t **out, const char *path);
#endif
