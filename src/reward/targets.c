/* Reward-target math (spec §2.1–2.2): cosine, InfoNCE coherence, seeded negative sampling, normalisation,
 * softmax-weighted mixing and the rollout fraction.  Pure functions; formulas in docs/reward.md. */
#include "base/base.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

double fp_cosine(const float *a, const float *b, size_t dim) {
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < dim; i++) {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (na <= 0 || nb <= 0) return 0.0;
    double c = dot / (sqrt(na) * sqrt(nb));
    return c > 1 ? 1 : c < -1 ? -1 : c;
}

int fp_reward_coherence(const float *prev, const float *pos, const float *negs, size_t k, size_t dim,
                        double tau, double *log_prob) {
    if (!prev || !pos || (k && !negs) || !log_prob) return fp_errorf(FP_EINVAL, "coherence: NULL argument");
    if (!(tau > 0) || !isfinite(tau)) return fp_errorf(FP_EINVAL, "coherence: temperature must be > 0 (got %g)", tau);
    double lpos = fp_cosine(prev, pos, dim) / tau;
    double mx = lpos;
    for (size_t j = 0; j < k; j++) {
        double l = fp_cosine(prev, negs + j * dim, dim) / tau;
        if (l > mx) mx = l;
    }
    double sum = exp(lpos - mx);
    for (size_t j = 0; j < k; j++) sum += exp(fp_cosine(prev, negs + j * dim, dim) / tau - mx);
    *log_prob = lpos - mx - log(sum);
    if (*log_prob > 0) *log_prob = 0;
    return FP_OK;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fp_rng_seed(fp_rng *r, uint64_t seed, uint64_t record, uint64_t step) {
    r->state = mix64(mix64(mix64(seed) ^ record) ^ step);
}

uint64_t fp_rng_next(fp_rng *r) {
    r->state += 0x9E3779B97F4A7C15ull;
    uint64_t z = r->state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t fp_rng_below(fp_rng *r, uint64_t m) {
    return (uint64_t)(((unsigned __int128)fp_rng_next(r) * m) >> 64);
}

int fp_reward_sample_negatives(uint64_t seed, uint64_t record, uint64_t step, size_t pool_n, size_t excl_lo,
                               size_t excl_hi, size_t k, size_t *out_idx) {
    if (excl_lo > excl_hi || excl_hi > pool_n)
        return fp_errorf(FP_EINVAL, "negatives: bad exclusion range [%zu, %zu) for a pool of %zu", excl_lo, excl_hi, pool_n);
    size_t avail = pool_n - (excl_hi - excl_lo);
    if (avail < k)
        return fp_errorf(FP_ERANGE, "negatives: %zu wanted but only %zu steps from other trajectories", k, avail);
    fp_rng r;
    fp_rng_seed(&r, seed, record, step);
    for (size_t i = 0; i < k;) {
        size_t u = (size_t)fp_rng_below(&r, avail);
        size_t idx = u < excl_lo ? u : u + (excl_hi - excl_lo);
        int dup = 0;
        for (size_t j = 0; j < i; j++) if (out_idx[j] == idx) { dup = 1; break; }
        if (!dup) out_idx[i++] = idx;
    }
    return FP_OK;
}

double fp_reward_mix(const double *c, size_t k) {
    double mx = -INFINITY;
    size_t n = 0;
    for (size_t i = 0; i < k; i++) if (!isnan(c[i])) { n++; if (c[i] > mx) mx = c[i]; }
    if (!n) return NAN;
    double z = 0, s = 0;
    for (size_t i = 0; i < k; i++) {
        if (isnan(c[i])) continue;
        double w = exp(c[i] - mx);
        z += w;
        s += w * c[i];
    }
    return s / z;
}

void fp_reward_step(double cos_align, double coh_log_prob, double qual_score, fp_step_reward *out) {
    out->align = isnan(cos_align) ? NAN : (cos_align + 1.0) / 2.0;
    out->coh = isnan(coh_log_prob) ? NAN : exp(coh_log_prob);
    out->qual = isnan(qual_score) ? NAN : qual_score / 10.0;
    double c[3] = {out->align, out->coh, out->qual};
    out->mixed = fp_reward_mix(c, 3);
}

double fp_reward_final(const int *correct, size_t n) {
    if (!n) return NAN;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) ok += correct[i] != 0;
    return (double)ok / (double)n;
}

int fp_reward_trajectory(const fp_step_pool *p, uint64_t record, size_t lo, size_t n_steps, const float *question,
                         const float *response, size_t n_resp, const double *qual, fp_step_reward *out,
                         double *raw_align, double *raw_coh) {
    if (!p || !p->pool || !question || (n_resp && !response) || (n_steps && !out))
        return fp_errorf(FP_EINVAL, "reward: NULL argument");
    if (lo + n_steps > p->pool_n || lo + n_steps < lo)
        return fp_errorf(FP_EINVAL, "reward: trajectory rows [%zu, %zu) outside a pool of %zu", lo, lo + n_steps, p->pool_n);
    size_t d = p->dim;
    size_t *idx = p->k_neg ? fp_malloc(p->k_neg * sizeof *idx) : NULL;
    float *negs = p->k_neg ? fp_malloc(p->k_neg * d * sizeof *negs) : NULL;
    if (p->k_neg && (!idx || !negs)) { free(idx); free(negs); return FP_ENOMEM; }
    int rc = FP_OK;
    for (size_t t = 0; t < n_steps; t++) {
        const float *st = p->pool + (lo + t) * d;
        const float *prev = t ? p->pool + (lo + t - 1) * d : question;
        double align = t < n_resp ? fp_cosine(st, response + t * d, d) : NAN;
        rc = fp_reward_sample_negatives(p->seed, record, t + 1, p->pool_n, lo, lo + n_steps, p->k_neg, idx);
        if (rc) break;
        for (size_t j = 0; j < p->k_neg; j++) memcpy(negs + j * d, p->pool + idx[j] * d, d * sizeof *negs);
        double coh;
        rc = fp_reward_coherence(prev, st, negs, p->k_neg, d, p->tau, &coh);
        if (rc) break;
        double q = qual ? qual[t] : NAN;
        fp_reward_step(align, coh, q, &out[t]);
        if (raw_align) raw_align[t] = align;
        if (raw_coh) raw_coh[t] = coh;
    }
    free(idx);
    free(negs);
    if (rc) return fp_error_prefix("trajectory %llu: ", (unsigned long long)record);
    return FP_OK;
}
