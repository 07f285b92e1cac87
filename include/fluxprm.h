/* fluxprm — a native engine and toolkit for trajectory-aware process reward models (ReasonFlux-PRM).
 *
 * Conventions: every function that can fail returns an int status (FP_OK = 0, else an FP_E* code) and
 * records a message retrievable with fp_last_error() (per thread).  Nothing here prints or exits.
 * Handles are opaque; each has a matching *_free that accepts NULL. */
#ifndef FLUXPRM_H
#define FLUXPRM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */
enum {
    FP_OK = 0,
    FP_EINVAL = 1,      /* bad argument or bad input data */
    FP_EIO = 2,         /* file system / network failure */
    FP_EPARSE = 3,      /* malformed file or record */
    FP_ENOMEM = 4,
    FP_EUNSUPPORTED = 5,/* valid but not supported (yet) */
    FP_ERANGE = 6,      /* value out of the allowed range (e.g. sequence too long) */
    FP_ESTATE = 7       /* operation not valid in the current state */
};
/* Message of the last failure on this thread ("" if none). */
const char *fp_last_error(void);
/* Status code of the last failure on this thread. */
int fp_last_error_code(void);
/* Human name of a status code. */
const char *fp_status_name(int status);
const char *fp_version(void);

/* ---------------------------------------------------------------- JSONL streaming */
/* Reads a JSONL file (or stdin) one record at a time in constant memory (plus the longest line). */
typedef struct fp_jsonl_reader fp_jsonl_reader;
/* path "-" or NULL reads stdin. */
int fp_jsonl_open(fp_jsonl_reader **out, const char *path);
/* Reads the next non-blank line into *line (owned by the reader, valid until the next call) and sets *len.
 * Returns FP_OK, or FP_ERANGE at end of input, or FP_EIO. */
int fp_jsonl_next_line(fp_jsonl_reader *r, const char **line, size_t *len);
/* 1-based line number of the line last returned. */
long fp_jsonl_line_number(const fp_jsonl_reader *r);
const char *fp_jsonl_path(const fp_jsonl_reader *r);
void fp_jsonl_close(fp_jsonl_reader *r);

/* Output file written atomically: data goes to "<path>.tmp.<pid>", renamed over <path> on commit.
 * path "-" or NULL writes stdout directly (no atomicity possible). */
typedef struct fp_outfile fp_outfile;
int fp_outfile_open(fp_outfile **out, const char *path, int append_from_existing);
FILE *fp_outfile_stream(fp_outfile *o);
/* Flushes, fsyncs and renames into place. Frees o. */
int fp_outfile_commit(fp_outfile *o);
/* Discards the temporary file, leaving any existing <path> untouched. Frees o. */
void fp_outfile_abort(fp_outfile *o);

/* ---------------------------------------------------------------- progress */
typedef struct fp_progress fp_progress;
/* total may be 0 when unknown. Draws nothing unless enabled (CLI: stderr is a TTY and no --quiet). */
fp_progress *fp_progress_new(const char *label, long total, int enabled);
/* Adds done records and tokens; redraws at most ~10x per second. */
void fp_progress_add(fp_progress *p, long records, long tokens);
void fp_progress_finish(fp_progress *p);

/* ---------------------------------------------------------------- tokenizer */
/* (filled in by the tokenizer subsystem) */

/* ---------------------------------------------------------------- model */
/* (filled in by the model subsystem) */

/* ---------------------------------------------------------------- verify */
/* (filled in by the verify subsystem) */

#ifdef __cplusplus
}
#endif
#endif
