/* Score sources: score values → r̂, and the precomputed-field candidate scorer. */
#include "base/json.h"
#include "apps/scorer.h"
#include <math.h>
#include <stdlib.h>

static int finite_number(const json_t *v, double *out) {
    if (!json_is_number(v)) return 0;
    double x = json_number_value(v);
    if (!isfinite(x)) return 0;
    *out = x;
    return 1;
}


static int steps_score(const json_t *steps, fp_aggregate agg, double *out) {
    size_t n = json_array_size(steps);
    if (n == 0) return fp_errorf(FP_EINVAL, "empty list of step rewards");
    double stackbuf[64], *r = n <= 64 ? stackbuf : fp_malloc(n * sizeof *r);
    if (!r) return FP_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(steps, i);
        if (!finite_number(e, &r[i])) {
            if (r != stackbuf) free(r);
            return fp_errorf(FP_EINVAL, "step reward %zu is %s, expected a finite number", i,
                             json_is_number(e) ? "not finite" : fp_json_kind(e));
        }
    }
    *out = fp_aggregate_steps(r, n, agg);
    if (r != stackbuf) free(r);
    if (!isfinite(*out)) return fp_errorf(FP_EINVAL, "aggregate of the step rewards is not finite");
    return FP_OK;
}

int fp_score_value(const json_t *v, fp_aggregate agg, double alpha, const json_t *final_v, double *out) {
    if (!v) return fp_errorf(FP_EINVAL, "missing");
    double f = NAN;
    if (final_v && !json_is_null(final_v) && !finite_number(final_v, &f))
        return fp_errorf(FP_EINVAL, "final score is %s, expected a finite number", fp_json_kind(final_v));
    if (json_is_number(v)) {
        if (!finite_number(v, out)) return fp_errorf(FP_EINVAL, "score is not finite");
        if (!isnan(f)) return fp_errorf(FP_EINVAL, "a final score was given for a plain-number score (r̂ already)");
        return FP_OK;
    }
    if (json_is_array(v)) {
        int rc = steps_score(v, agg, out);
        if (rc) return rc;
    } else if (json_is_object(v)) {
        const json_t *steps = json_object_get(v, "steps");
        if (!steps) steps = json_object_get(v, "step_rewards");
        const json_t *fin = json_object_get(v, "final");
        if (!fin) fin = json_object_get(v, "final_reward");
        if (!steps) return fp_errorf(FP_EINVAL, "object has no \"steps\" list");
        if (!json_is_array(steps)) return fp_errorf(FP_EINVAL, "\"steps\" is %s, expected a list", fp_json_kind(steps));
        int rc = steps_score(steps, agg, out);
        if (rc) return rc;
        if (fin && !json_is_null(fin)) {
            if (!isnan(f)) return fp_errorf(FP_EINVAL, "final score given twice (in the object and in a final field)");
            if (!finite_number(fin, &f))
                return fp_errorf(FP_EINVAL, "\"final\" is %s, expected a finite number", fp_json_kind(fin));
        }
    } else {
        return fp_errorf(FP_EINVAL, "is %s, expected a number, a list of step rewards or {\"steps\", \"final\"}",
                         fp_json_kind(v));
    }
    if (!isnan(f)) *out += alpha * f;
    if (!isfinite(*out)) return fp_errorf(FP_EINVAL, "score is not finite");
    return FP_OK;
}

int fp_field_scorer_score(void *ctx, const fp_candidates *c, double *scores_out) {
    const fp_field_scorer *fs = ctx;
    const json_t *v = json_object_get(c->record, fs->field);
    if (!v) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", c->where, fs->field);
    const json_t *fin = NULL;
    if (fs->final_field) {
        fin = json_object_get(c->record, fs->final_field);
        if (!fin) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", c->where, fs->final_field);
        if (!json_is_array(fin))
            return fp_errorf(FP_EINVAL, "%s: field '%s' is %s, expected a list of %zu final scores", c->where,
                             fs->final_field, fp_json_kind(fin), c->n);
        if (json_array_size(fin) != c->n)
            return fp_errorf(FP_EINVAL, "%s: field '%s' has %zu final scores for %zu candidates", c->where,
                             fs->final_field, json_array_size(fin), c->n);
    }
    if (!json_is_array(v)) {
        if (c->n == 1 && json_is_object(v)) { /* one candidate given as a bare value */
            int rc = fp_score_value(v, fs->agg, fs->alpha, fin ? json_array_get(fin, 0) : NULL, &scores_out[0]);
            return rc ? fp_error_prefix("%s: field '%s': ", c->where, fs->field) : FP_OK;
        }
        if (c->n == 1 && json_is_number(v) && !fin) {
            scores_out[0] = json_number_value(v);
            if (!isfinite(scores_out[0])) return fp_errorf(FP_EINVAL, "%s: field '%s': score is not finite", c->where, fs->field);
            return FP_OK;
        }
        return fp_errorf(FP_EINVAL, "%s: field '%s' is %s, expected a list of %zu candidate scores", c->where,
                         fs->field, fp_json_kind(v), c->n);
    }
    if (json_array_size(v) != c->n)
        return fp_errorf(FP_EINVAL, "%s: field '%s' has %zu scores for %zu candidates", c->where, fs->field,
                         json_array_size(v), c->n);
    for (size_t i = 0; i < c->n; i++) {
        int rc = fp_score_value(json_array_get(v, i), fs->agg, fs->alpha, fin ? json_array_get(fin, i) : NULL,
                                &scores_out[i]);
        if (rc) return fp_error_prefix("%s: field '%s'[%zu]: ", c->where, fs->field, i);
    }
    return FP_OK;
}

fp_candidate_scorer fp_field_scorer_make(fp_field_scorer *fs) {
    fp_candidate_scorer s = {fp_field_scorer_score, fs, "field"};
    return s;
}

int fp_record_score(const json_t *record, const char *field, const char *final_field, fp_aggregate agg,
                    double alpha, const char *where, double *out) {
    if (!json_is_object(record)) return fp_errorf(FP_EINVAL, "%s: record is %s, expected an object", where, fp_json_kind(record));
    const json_t *v = json_object_get(record, field);
    if (!v) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", where, field);
    const json_t *fin = NULL;
    if (final_field) {
        fin = json_object_get(record, final_field);
        if (!fin) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", where, final_field);
    }
    int rc = fp_score_value(v, agg, alpha, fin, out);
    return rc ? fp_error_prefix("%s: field '%s': ", where, field) : FP_OK;
}
