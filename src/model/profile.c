/* Per-phase profile of the trunk prefill (for `fluxprm bench`): replays the operations of one
 * fp_model_trunk_forward over T tokens, with the model's real weights, the same shapes, the same kernels
 * (fp_model_linear at the model's precision, fp_attention_forward, the ops.h kernels) and the same MLP
 * chunking, and times each phase.  It does not go through forward.c, so its numbers are a replay, not an
 * instrumented run: the bench prints the replay total next to the real forward's time so that the two can be
 * compared.  The values computed are not used (the residual stream is renormalised by the replayed norms). */
#include "model/model.h"
#include "tensor/ops.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define PROFILE_MLP_CHUNK_FLOATS (16u << 20) /* must match forward.c's MLP_CHUNK_FLOATS */

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
    const fp_model_config *c = &m->cfg;
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return fp_errorf(FP_EINVAL, "model profile: token id %d at position %d is outside the vocabulary",
                             (int)ids[t], t);
    const int H = c->hidden_size, I = c->intermediate_size, nh = c->num_heads, nkv = c->num_kv_heads,
              d = c->head_dim, half = d / 2, NL = c->num_layers;
    const int qd = nh * d, kvd = nkv * d, wide = qd > H ? qd : H, gate_cols = I > H ? I : H;
    const float eps = (float)c->rms_norm_eps;
    int chunk = (int)(PROFILE_MLP_CHUNK_FLOATS / 2 / (unsigned)I);
    if (chunk < 16) chunk = 16;
    if (chunk > T) chunk = T;
    size_t tT = (size_t)T;
    float *x = fp_malloc(sizeof(float) * tT * H), *xn = fp_malloc(sizeof(float) * tT * wide),
          *q = fp_malloc(sizeof(float) * tT * wide), *k = fp_malloc(sizeof(float) * tT * kvd),
          *v = fp_malloc(sizeof(float) * tT * kvd), *gate = fp_malloc(sizeof(float) * (size_t)chunk * gate_cols),
          *up = fp_malloc(sizeof(float) * (size_t)chunk * gate_cols), *cs = fp_malloc(sizeof(float) * tT * half),
          *sn = fp_malloc(sizeof(float) * tT * half);
    int rc = FP_OK;
    if (!x || !xn || !q || !k || !v || !gate || !up || !cs || !sn) {
        rc = fp_errorf(FP_ENOMEM, "model profile: out of memory for %d tokens", T);
        goto done;
    }
    int saved_threads = omp_get_max_threads();
    if (m->nthreads > 0) omp_set_num_threads(m->nthreads);
    double *ph = r->seconds, t0 = fp_now(), start = t0, t1;
#define LAP(p) (t1 = fp_now(), ph[p] += t1 - t0, t0 = t1)
    size_t erow = fp_dtype_row_bytes(m->embed->dtype, H);
#pragma omp parallel for schedule(static) if (T > 64)
    for (int t = 0; t < T; t++)
        fp_row_to_f32(x + (size_t)t * H, (const char *)m->embed->data + (size_t)ids[t] * erow, m->embed->dtype, H);
    fp_rope_tables(cs, sn, m->inv_freq, NULL, T, d);
    LAP(FP_PROFILE_EMBED);
    for (int l = 0; l < NL && !rc; l++) {
        const fp_layer *y = &m->layers[l];
        fp_rmsnorm_forward(xn, x, y->in_norm, eps, T, H);
        LAP(FP_PROFILE_RMSNORM);
        fp_model_linear(m, k, xn, y->k_w, y->k_b, T);
        fp_model_linear(m, v, xn, y->v_w, y->v_b, T);
        fp_model_linear(m, q, xn, y->q_w, y->q_b, T);
        LAP(FP_PROFILE_QKV);
        if (y->q_norm) {
            fp_rmsnorm_forward(q, q, y->q_norm, eps, T * nh, d);
            fp_rmsnorm_forward(k, k, y->k_norm, eps, T * nkv, d);
        }
        fp_rope_forward(q, cs, sn, T, nh, d);
        fp_rope_forward(k, cs, sn, T, nkv, d);
        LAP(FP_PROFILE_ROPE);
        if (fp_attention_forward(xn, q, k, v, NULL, NULL, T, T, nh, nkv, d)) {
            rc = fp_errorf(FP_ENOMEM, "model profile: out of memory (attention scratch)");
            break;
        }
        LAP(FP_PROFILE_ATTENTION);
        fp_model_linear(m, q, xn, y->o_w, NULL, T);
        LAP(FP_PROFILE_OPROJ);
        for (size_t i = 0; i < tT * H; i++) x[i] += q[i];
        LAP(FP_PROFILE_RESIDUAL);
        fp_rmsnorm_forward(xn, x, y->post_norm, eps, T, H);
        LAP(FP_PROFILE_RMSNORM);
        for (int r0 = 0; r0 < T; r0 += chunk) {
            int cn = T - r0 < chunk ? T - r0 : chunk;
            const float *xin = xn + (size_t)r0 * H;
            fp_model_linear(m, gate, xin, y->gate_w, NULL, cn);
            fp_model_linear(m, up, xin, y->up_w, NULL, cn);
            LAP(FP_PROFILE_GATE_UP);
            fp_swiglu_forward(gate, gate, up, cn, I);
            LAP(FP_PROFILE_SWIGLU);
            float *dn = H <= I ? up : (float *)xin;
            fp_model_linear(m, dn, gate, y->down_w, NULL, cn);
            LAP(FP_PROFILE_DOWN);
            float *xr = x + (size_t)r0 * H;
            for (size_t i = 0; i < (size_t)cn * H; i++) xr[i] += dn[i];
            LAP(FP_PROFILE_RESIDUAL);
        }
    }
    if (!rc) {
        fp_rmsnorm_forward(xn, x, m->final_norm, eps, T, H);
        LAP(FP_PROFILE_RMSNORM);
    }
#undef LAP
    r->total = fp_now() - start;
    if (m->nthreads > 0) omp_set_num_threads(saved_threads);
done:
    free(x); free(xn); free(q); free(k); free(v); free(gate); free(up); free(cs); free(sn);
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
