/* The PRM as a score source for bestofn (candidates) and select (pool records). */
#include "apps/prm_sources.h"
#include <stdlib.h>

int fp_prm_candidate_score(void *ctx, const fp_candidates *c, double *scores_out) {
    fp_prm *p = ctx;
    if (!c->question) return fp_errorf(FP_EINVAL, "%s: the record has no question field to score candidates against", c->where);
    for (size_t i = 0; i < c->n; i++) {
        json_t *rec = json_pack("{s:s, s:s}", "question", c->question, "response", c->responses[i]);
        if (!rec) return fp_errorf(FP_ENOMEM, "%s: cannot build candidate %zu", c->where, i);
        fp_record r;
        fp_prm_result res;
        int rc = fp_record_parse(&r, rec, fp_prm_format_opts(p));
        json_decref(rec);
        if (rc == FP_OK) {
            rc = fp_prm_score_record(p, &r, &res);
            fp_record_free(&r);
        }
        if (rc) return fp_error_prefix("%s: candidate %zu: ", c->where, i);
        scores_out[i] = res.score;
        fp_prm_result_free(&res);
    }
    return FP_OK;
}

int fp_prm_record_score(void *ctx, const json_t *record, const char *where, double *out) {
    fp_prm *p = ctx;
    fp_record r;
    fp_prm_result res;
    int rc = fp_record_parse(&r, record, fp_prm_format_opts(p));
    if (rc == FP_OK) {
        rc = fp_prm_score_record(p, &r, &res);
        fp_record_free(&r);
    }
    if (rc) return fp_error_prefix("%s: ", where);
    *out = res.score;
    fp_prm_result_free(&res);
    return FP_OK;
}
