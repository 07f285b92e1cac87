/* Per-phase profile of the trunk prefill (for `fluxprm bench`): one real fp_model_trunk_forward over T tokens
 * with forward.c's timing laps switched on (m->prof), plus the FLOP count of each phase. */
#include "model/model.h"
#include <stdlib.h>
#include <string.h>

static const char *const phase_names[FP_PROFILE_NPHASES] = {
    "embed", "rmsnorm", "qkv-proj", "rope", "attention", "o-proj", "gate-up-proj", "swiglu", "down-proj",
    "residual"};

const char *fp_model_profile_phase_name(int phase) {
    return phase >= 0 && phase < FP_PROFILE_NPHASES ? phase_names[phase] : "?";
}

int fp_model_profile(fp_model *m, const int32_t *ids, int T, fp_model_profile_result *r) {
    if (!m || !ids || !r) return fp_errorf(FP_EINVAL, "model profile: NULL argument");
    if (T <= 0) return fp_errorf(FP_EINVAL, "model profile: T = %d", T);
    memset(r, 0, sizeof(*r));
    float *out = fp_malloc(sizeof(float) * (size_t)T * (size_t)m->cfg.hidden_size);
    if (!out) return FP_ENOMEM;
    m->prof = r;
    double start = fp_now();
    int rc = fp_model_trunk_forward(m, ids, T, NULL, T, out);
    r->total = fp_now() - start;
    m->prof = NULL;
    free(out);
    return rc;
}

void fp_model_profile_flops(const fp_model *m, int T, double *flops) {
    const fp_model_config *c = &m->cfg;
    double H = c->hidden_size, I = c->intermediate_size, qd = (double)c->num_heads * c->head_dim,
           kvd = (double)c->num_kv_heads * c->head_dim, NL = c->num_layers, tT = T;
    for (int p = 0; p < FP_PROFILE_NPHASES; p++) flops[p] = 0;
    flops[FP_PROFILE_QKV] = 2.0 * tT * H * (qd + 2 * kvd) * NL;
    flops[FP_PROFILE_OPROJ] = 2.0 * tT * qd * H * NL;
    flops[FP_PROFILE_GATE_UP] = 2.0 * tT * H * 2 * I * NL;
    flops[FP_PROFILE_DOWN] = 2.0 * tT * I * H * NL;
    /* causal: query t sees t+1 keys; QK^T and PV are 2*d flops each per (query, key, head) */
    flops[FP_PROFILE_ATTENTION] = 2.0 * 2.0 * c->head_dim * c->num_heads * (tT * (tT + 1) / 2) * NL;
}
