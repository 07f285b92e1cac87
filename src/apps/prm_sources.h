/* Adapters that let bestofn and select score with a PRM instead of a precomputed field. */
#ifndef FP_APPS_PRM_SOURCES_H
#define FP_APPS_PRM_SOURCES_H
#include "apps/prm.h"
#include "apps/scorer.h"

/* ctx: an fp_prm.  Each candidate is scored as {question, response} (steps split on "\n\n",
 * <think>...</think> separating thinking from the answer); scores_out[i] = r̂. */
int fp_prm_candidate_score(void *ctx, const fp_candidates *c, double *scores_out);
/* ctx: an fp_prm.  A pool record in any shape `fluxprm score` accepts; *out = r̂. */
int fp_prm_record_score(void *ctx, const json_t *record, const char *where, double *out);
#endif
