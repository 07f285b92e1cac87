/* Best-of-N selection over N candidate responses per question (spec.md §3.3), model-free core.
 *
 * Methods (candidates are indexed 0..N-1 in input order):
 *   prm       the candidate with the highest r̂; ties → the lowest index.
 *   majority  answers are clustered (greedy, in index order: a candidate joins the first earlier cluster
 *             whose FIRST member's answer is equal to its own under the equality function, else opens a new
 *             cluster).  The largest cluster wins; ties → the cluster opened first (= containing the
 *             earliest candidate).  The chosen index is that cluster's first member.
 *   prm_vote  the same clusters, weighted by the sum of their members' r̂ (summed in index order); ties →
 *             the cluster opened first.  The chosen index is the cluster member with the highest r̂ (ties → lowest index).
 * Candidates without an extractable answer do not vote.  When no candidate has an answer, majority
 * chooses candidate 0 and prm_vote falls back to the prm choice (both with answer null).
 * Because greedy clustering only looks at earlier candidates, the clusters of the first n candidates are
 * the first-n restriction of the full clustering: the N-curve reuses one clustering per record. */
#ifndef FP_BESTOFN_H
#define FP_BESTOFN_H
#include "apps/aggregate.h"
#include "apps/scorer.h"
#include <jansson.h>
#include <stdio.h>

/* Answer extraction and equality: default fp_verify_extract / fp_verify_equal. */
typedef int (*fp_answer_extract_fn)(void *ctx, const char *text, char **answer /* malloc'd or NULL */);
typedef int (*fp_answer_equal_fn)(void *ctx, const char *a, const char *b); /* 1 equal, 0 not */

enum { FP_BON_PRM = 0, FP_BON_MAJORITY = 1, FP_BON_PRM_VOTE = 2, FP_BON_PASS = 3, FP_BON_NMETRIC = 4 };
const char *fp_bon_method_name(int m); /* "prm", "majority", "prm_vote", "pass_at_n" */

/* ---- per-question core (pure functions) */
/* cluster[i] = cluster id (0, 1, .. in order of first member) or -1 for answers[i] == NULL. */
int fp_bon_cluster(char *const *answers, size_t n, fp_answer_equal_fn eq, void *ctx, int *cluster);
typedef struct {
    size_t index[3];    /* chosen candidate per method (FP_BON_PRM, FP_BON_MAJORITY, FP_BON_PRM_VOTE) */
    int cluster[3];     /* the chosen cluster (-1: none, i.e. no answers) */
    double votes;       /* majority: size of the winning cluster */
    double weight;      /* prm_vote: summed r̂ of the winning cluster */
} fp_bon_choice;
/* Chooses among the first n candidates (n >= 1; cluster[] from fp_bon_cluster over any n' >= n). */
void fp_bon_choose(const double *scores, const int *cluster, size_t n, fp_bon_choice *out);

/* ---- file driver */
typedef struct {
    const char *responses_field; /* default "responses": a non-empty list of strings */
    const char *answers_field;   /* NULL: extract from each response; else a list of N strings/numbers/nulls */
    const char *gold_field;      /* default "gold"; optional per record (string or number) */
    const char *correct_field;   /* NULL; else a list of N booleans/0/1 labels overriding gold-based checks */
    const char *question_field;  /* NULL: "question" | "problem" | "prompt" when present */
    fp_candidate_scorer scorer;  /* required (e.g. fp_field_scorer_make) */
    fp_answer_extract_fn extract; /* NULL: fp_verify_extract */
    fp_answer_equal_fn equal;     /* NULL: fp_verify_equal */
    void *answer_ctx;
    int skip_bad;                /* 1: a bad record is reported through on_skip and skipped */
    void (*on_skip)(void *ctx, const char *message);
    void *on_skip_ctx;
    const char *output_key;      /* default "bestofn": the member added to each output record */
    fp_progress *progress;       /* NULL = none; one record added per question */
} fp_bestofn_opts;
void fp_bestofn_opts_default(fp_bestofn_opts *o);

#define FP_BON_MAX_LEVELS 64
typedef struct {
    long n_records;              /* records read (non-blank lines) */
    long n_questions;            /* records processed */
    long n_skipped;              /* bad records skipped (skip_bad) */
    long n_evaluated;            /* processed records with gold or correctness labels */
    size_t max_n, min_n;         /* largest / smallest N seen */
    long correct[FP_BON_NMETRIC];/* over evaluated records with all their candidates */
    /* curve: point k uses the first n_k = min(2^k, N_record) candidates of each record; the final point
     * (N = max_n) uses all.  Filled by fp_bestofn_finish. */
    size_t n_points;
    double curve_n[FP_BON_MAX_LEVELS + 1];
    long curve_correct[FP_BON_MAX_LEVELS + 1][FP_BON_NMETRIC];
    /* internal accumulators */
    long lvl_[FP_BON_MAX_LEVELS][FP_BON_NMETRIC], from_[FP_BON_MAX_LEVELS][FP_BON_NMETRIC];
} fp_bestofn_report;

/* Reads JSONL from in_path ("-" = stdin) and writes each processed record, extended with
 * opts->output_key = {"n", "scores", "answers", "cluster", ["correct"], "prm": {...}, "majority": {...},
 * "prm_vote": {...}, ["pass_at_n"]}, to out.  Errors name file:line and the field. */
int fp_bestofn_run(const fp_bestofn_opts *o, const char *in_path, FILE *out, fp_bestofn_report *rep);
/* Accuracy of method m over evaluated records (NAN when none). */
double fp_bestofn_accuracy(const fp_bestofn_report *r, int m);
/* JSON summary: {"n_questions", "n_evaluated", "n_skipped", "max_n", "prm", "majority", "prm_vote",
 * "pass_at_n", "curve": [{"n", "prm", "majority", "prm_vote", "pass_at_n"}, ..]} (accuracies null without gold). */
json_t *fp_bestofn_report_json(const fp_bestofn_report *r);
/* SVG line chart of the curve (accuracy vs N, log2 axis). */
int fp_bestofn_curve_svg(const fp_bestofn_report *r, FILE *f);
#endif
