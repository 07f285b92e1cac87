/* Offline data selection (spec.md §3.1): keep the top-K records of a pool by r̂ = aggregate(steps) + α·final.
 *
 * Streaming in O(K) memory: pass 1 parses each record, computes r̂ and keeps a bounded min-heap of
 * (r̂, record index, byte offset, length) — never the records themselves.  Pass 2 seeks to the kept
 * offsets and copies those lines (verbatim, or with a "select" member when annotating).  Ranking: higher r̂
 * first; equal r̂ → the lower input index ranks higher (so the kept set and its order are deterministic).
 * The score histogram needs [min, max] before binning: r̂ values are spilled to an unnamed temporary file
 * (16 bytes per record, on disk, not in memory) and binned after pass 1. */
#ifndef FP_SELECT_H
#define FP_SELECT_H
#include "apps/aggregate.h"
#include "apps/scorer.h"
#include "base/base.h"
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- bounded top-K heap (exposed for tests and other apps) */
typedef struct {
    double score;
    long index;   /* record index (0-based, non-blank lines) */
    long lineno;  /* 1-based line number */
    off_t offset; /* byte offset of the line */
    size_t len;   /* line length without the newline */
    long rank;    /* 1 = best; set by fp_select_run after pass 1 */
} fp_topk_item;
typedef struct {
    fp_topk_item *items; /* min-heap: items[0] is the worst kept */
    size_t size, cap, peak;
} fp_topk;
int fp_topk_init(fp_topk *h, size_t k);
void fp_topk_free(fp_topk *h);
/* 1 when a ranks above b (higher score, then lower index). */
int fp_topk_better(const fp_topk_item *a, const fp_topk_item *b);
/* Offers an item; returns 1 when it was kept (possibly evicting the worst). */
int fp_topk_push(fp_topk *h, const fp_topk_item *it);
/* Sorts the kept items in place: by rank (best first) or by input index; heap order is lost. */
void fp_topk_sort(fp_topk *h, int by_index);

enum { FP_SELECT_ORDER_INPUT = 0, FP_SELECT_ORDER_SCORE = 1 };

typedef struct {
    fp_record_scorer scorer;   /* score source; scorer.score NULL = read scores_field (below) */
    const char *scores_field;  /* default "score": a number, step-reward list or {"steps","final"} */
    const char *final_field;   /* NULL, or a record-level final score added as α·final */
    fp_aggregate agg;          /* default mean */
    double alpha;              /* default 1.0 */
    long top_k;                /* > 0: keep K; 0: use top_frac */
    double top_frac;           /* in (0, 1]: K = ceil(F · records), records = non-blank lines of the pool */
    int order;                 /* FP_SELECT_ORDER_* (default input) */
    int annotate;              /* 1: add "select": {"score", "rank"} to each kept record */
    size_t bins;               /* histogram bins (default 40; 0 = no histogram) */
    int skip_bad;
    void (*on_skip)(void *ctx, const char *message);
    void *on_skip_ctx;
    fp_progress *progress;     /* NULL = none; one record added per pool record in pass 1 */
} fp_select_opts;
void fp_select_opts_default(fp_select_opts *o);

typedef struct {
    long n_records, n_scored, n_skipped, n_kept, n_dropped, k;
    size_t heap_peak;            /* most items the heap ever held (<= k) */
    double min, max, mean;       /* over scored records (NAN when none) */
    double kept_min, kept_max, kept_mean;
    double threshold;            /* r̂ of the worst kept record (NAN when none kept) */
    /* histogram over [hist_lo, hist_hi] (= [min, max]; all in bin 0 when min == max) */
    size_t bins;
    long *hist_all, *hist_kept;
    double hist_lo, hist_hi;
    uint64_t in_size;            /* input file size and modification time (ns) at the start */
    int64_t in_mtime_ns;
} fp_select_stats;

/* Runs the selection of the pool in in_path (a regular file: pass 2 seeks) and writes the kept records
 * to out.  Errors name file:line and the field; with skip_bad, bad records go to on_skip and are
 * dropped from consideration.  FP_ESTATE when the input changes between the passes. */
int fp_select_run(const fp_select_opts *o, const char *in_path, FILE *out, fp_select_stats *st);
void fp_select_stats_free(fp_select_stats *st);
/* The parameters that determine the output (for the summary and --resume). */
json_t *fp_select_params_json(const fp_select_opts *o);
/* Summary: {"complete", "input": {"path","size","mtime_ns"}, "output": {"path","size"}, "params", counts,
 * "score": {...}, "histogram": {"bins","lo","hi","counts","kept"}}.  out_path/out_size describe the
 * written output (out_size < 0: unknown, e.g. stdout). */
json_t *fp_select_summary_json(const fp_select_opts *o, const fp_select_stats *st, const char *in_path,
                               const char *out_path, long long out_size);
int fp_select_histogram_svg(const fp_select_stats *st, FILE *f);
/* --resume: 1 when summary_path holds a complete summary whose input (path, size, mtime), params and
 * output (path, size) match the current input file, opts and existing out_path; else 0 (never an error:
 * anything missing or different simply means "run again"). */
int fp_select_is_complete(const fp_select_opts *o, const char *in_path, const char *out_path,
                          const char *summary_path);
/* ---- building blocks of fp_select_run, shared with the distributed driver (select_mpi.c).  A "range" is
 * the lines that START at a byte offset in [start, end) (end < 0: to the end of the file); start must be a
 * line start.  Record indices and line numbers continue from first_index / first_lineno (the records and
 * lines before start), so ranges scanned separately give the same items and messages as one scan. */
typedef struct {
    long n_records, n_scored, n_skipped;
    double sum;      /* sequential sum of the scores, in record order, starting from 0 */
    double min, max; /* NAN when nothing was scored; on equal values the first one is kept */
} fp_select_part;
int fp_select_file_id(FILE *f, const char *path, uint64_t *size, int64_t *mtime_ns);
/* FP_ESTATE when the file's size or mtime differ from the ones recorded in st (it changed while being read). */
int fp_select_check_unchanged(FILE *f, const char *path, const fp_select_stats *st);
/* Lines (blank ones included) and records (non-blank lines) in a range; leaves f at start. */
int fp_select_count_range(FILE *f, const char *path, off_t start, off_t end, long *n_lines, long *n_records);
/* --top-frac: K = ceil(frac · n_records), at least 1. */
long fp_select_frac_k(double frac, long n_records);
/* Pass 1 over a range: scores each record, offers it to heap, appends (r̂, index) to spill when not NULL. */
int fp_select_scan_range(const fp_select_opts *o, FILE *f, const char *path, off_t start, off_t end,
                         long first_index, long first_lineno, fp_topk *heap, FILE *spill, fp_select_part *part);
/* Adds the spilled scores, in order, to *sum. */
int fp_select_spill_sum(FILE *spill, double *sum);
/* Bins the spilled scores over [min, max] into all[bins]; those ranking at or above worst (NULL: none kept)
 * also into kept[bins].  The arrays are added to, not cleared. */
int fp_select_hist_spill(FILE *spill, size_t bins, double min, double max, const fp_topk_item *worst, long *all,
                         long *kept);
/* After pass 1 (heap: a valid heap of the kept items; st->n_scored set): sets heap_peak, kept, dropped,
 * threshold and kept_*, ranks and orders the items and copies the kept lines of f to out (pass 2).
 * *worst_out (may be NULL) gets the worst kept item (zeroed when none). */
int fp_select_emit(const fp_select_opts *o, FILE *f, const char *path, fp_topk *heap, FILE *out,
                   fp_select_stats *st, fp_topk_item *worst_out);

/* ---- distributed selection over MPI (src/apps/select_mpi.c; real only in a `make MPI=1` build, which
 * defines FP_WITH_MPI).  Under `mpirun -np P fluxprm select ...` each rank scans its own byte range of the
 * pool (aligned to line starts), rank 0 gathers the P local top-K heaps, merges them with the same ranking
 * and writes the output; the output and every statistic are identical to fp_select_run's.  Without
 * FP_WITH_MPI, or when the process was not started by an MPI launcher, the size is 1 and everything below
 * is a no-op / fp_select_run itself. */
/* Initialises MPI when the process was started by an MPI launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 * PMIX_RANK in the environment); *rank = 0 and *size = 1 otherwise. */
int fp_select_mpi_init(int *rank, int *size);
void fp_select_mpi_finalize(void);
/* Collective (size > 1): every rank passes its status; all get the status of the lowest failing rank, with
 * its error message (fp_last_error) copied to every rank.  Size 1: returns rc. */
int fp_select_mpi_agree(int rc);
/* Collective: rank 0's v on every rank / the largest v over the ranks.  Size 1: v. */
int fp_select_mpi_bcast_int(int v);
int fp_select_mpi_max_int(int v);
/* Collective: the distributed fp_select_run.  out is written on rank 0 only (other ranks may pass NULL);
 * st is complete on rank 0 (other ranks hold their partial counts).  Every rank returns the same status.
 * Size 1: exactly fp_select_run. */
int fp_select_run_mpi(const fp_select_opts *o, const char *in_path, FILE *out, fp_select_stats *st);
#endif
