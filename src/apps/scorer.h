/* Score sources for bestofn and select: where a candidate's trajectory score r̂ comes from.
 *
 * Today the only source reads precomputed scores from a JSON field; a model-backed source (PRM forward +
 * tokenizer) plugs in through the same fp_candidate_scorer interface.
 *
 * A score VALUE (one candidate, or one pool record) is any of:
 *   0.83                         a trajectory score r̂, used as is
 *   [0.9, 0.7, 0.8]              step rewards: r̂ = aggregate(steps)   (a one-element list is that number)
 *   {"steps": [..], "final": f}  step rewards plus a final read-out: r̂ = aggregate(steps) + α·f
 *                                ("step_rewards" / "final_reward" are accepted as aliases; "final" may be
 *                                 absent or null = no final term)
 * A separate final field (opts final_field) adds α·final to list or object values (a record-level number
 * for select; a list with one number per candidate for bestofn).  A value that already is a plain number
 * is a finished r̂ and takes no final term; giving a final twice (object "final" and a final field) is an
 * error.  Non-finite numbers, empty step lists and non-numeric entries are errors. */
#ifndef FP_SCORER_H
#define FP_SCORER_H
#include "apps/aggregate.h"
#include "base/base.h"
#include <jansson.h>

/* Turns one score value into r̂.  final_v: an extra final read-out (JSON number) or NULL.  Errors
 * (FP_EINVAL) describe the problem without location; callers prefix "file:line: field 'x'". */
int fp_score_value(const json_t *v, fp_aggregate agg, double alpha, const json_t *final_v, double *out);

/* The N candidates of one question. */
typedef struct {
    const json_t *record;         /* the parsed input record */
    const char *question;         /* NULL when the record has none */
    const char *const *responses; /* [n] */
    size_t n;
    const char *where;            /* "file:line" for messages */
} fp_candidates;

/* Fills scores_out[n] with r̂ for each candidate.  Errors name c->where and the field. */
typedef int (*fp_candidate_scorer_fn)(void *ctx, const fp_candidates *c, double *scores_out);
typedef struct {
    fp_candidate_scorer_fn score;
    void *ctx;
    const char *name; /* for reports, e.g. "field:scores" or "model:/path" */
} fp_candidate_scorer;

/* The precomputed-field source: record[field] is a list of N score values (or, for N == 1, one value);
 * record[final_field] (optional) a list of N numbers/nulls. */
typedef struct {
    const char *field;
    const char *final_field; /* NULL = none */
    fp_aggregate agg;
    double alpha;
} fp_field_scorer;
int fp_field_scorer_score(void *ctx, const fp_candidates *c, double *scores_out);
/* Convenience: an fp_candidate_scorer around an fp_field_scorer (which must outlive it). */
fp_candidate_scorer fp_field_scorer_make(fp_field_scorer *fs);

/* One pool record's r̂ (select).  A model-backed source renders and scores the record itself. */
typedef int (*fp_record_scorer_fn)(void *ctx, const json_t *record, const char *where, double *out);
typedef struct {
    fp_record_scorer_fn score;
    void *ctx;
    const char *name; /* recorded in select's summary params (so --resume notices a different source) */
} fp_record_scorer;

/* The field source for one pool record: record[field] is a score value, record[final_field] an optional number.
 * Errors read "<where>: field '<field>': ..." */
int fp_record_score(const json_t *record, const char *field, const char *final_field, fp_aggregate agg,
                    double alpha, const char *where, double *out);
#endif
