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
#endif
