/* The PRM as a score source for bestofn (candidates) and select (pool records). */
#include "apps/prm_sources.h"
#include <stdlib.h>

int fp_prm_candidate_score(void *ctx, const fp_candidates *c, double *scores_out) {
    fp_prm *p = ctx;
    if (!c->question) return fp_errorf(FP_EINVAL, "%s: the record has no question field to score candidates against", c->where);
    if (c->n == 0) return FP_OK;
    /* All candidates share the question: fp_prm_score_candidates runs its tokens once (a KV-cache prefix). */
    fp_record *recs = fp_calloc(c->n, sizeof *recs);
    const fp_record **rp = fp_calloc(c->n, sizeof *rp);
    fp_prm_result *res = fp_calloc(c->n, sizeof *res);
    size_t parsed = 0;
    int rc = recs && rp && res ? FP_OK : FP_ENOMEM;
    for (; !rc && parsed < c->n; parsed++) {
        json_t *rec = json_pack("{s:s, s:s}", "question", c->question, "response", c->responses[parsed]);
        if (!rec) { rc = fp_errorf(FP_ENOMEM, "%s: cannot build candidate %zu", c->where, parsed); break; }
        rc = fp_record_parse(&recs[parsed], rec, fp_prm_format_opts(p));
        json_decref(rec);
        if (rc) { fp_error_prefix("%s: candidate %zu: ", c->where, parsed); break; }
        rp[parsed] = &recs[parsed];
    }
    if (!rc) {
        rc = fp_prm_score_candidates(p, rp, c->n, res);
        if (rc) fp_error_prefix("%s: ", c->where);
    }
    for (size_t i = 0; !rc && i < c->n; i++) {
        scores_out[i] = res[i].score;
        fp_prm_result_free(&res[i]);
    }
    for (size_t i = 0; recs && i < parsed && i < c->n; i++) fp_record_free(&recs[i]);
    free(recs);
    free(rp);
    free(res);
    return rc;
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
