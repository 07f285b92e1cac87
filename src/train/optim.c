/* AdamW (torch.optim.AdamW semantics), global-norm gradient clipping, learning-rate schedules. */
#include "base/base.h"
#include "train/train.h"
#include <math.h>
#include <stdlib.h>
#ifdef __SSE2__
#include <immintrin.h>
#endif

double fpt_lr_at(const fpt_adamw_cfg *c, long step) {
    if (c->warmup_steps > 0 && step < c->warmup_steps) return c->lr * (double)step / (double)c->warmup_steps;
    if (c->schedule == FPT_SCHED_CONSTANT) return c->lr;
    long span = c->total_steps - c->warmup_steps;
    if (span < 1) span = 1;
    double progress = (double)(step - c->warmup_steps) / (double)span;
    if (progress > 1) progress = 1;
    if (progress < 0) progress = 0;
    double f = c->schedule == FPT_SCHED_LINEAR ? 1.0 - progress : 0.5 * (1.0 + cos(M_PI * progress));
    double mn = c->min_lr_ratio;
    return c->lr * (mn + (1.0 - mn) * f);
}

double fpt_grad_norm(const float *g, size_t n) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

double fpt_clip_grad_norm(float *g, size_t n, float max_norm) {
    double norm = fpt_grad_norm(g, n);
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            float cf = (float)coef;
#pragma omp parallel for simd schedule(static) if (n > 65536)
            for (size_t i = 0; i < n; i++) g[i] *= cf;
        }
    }
    return norm;
}

int fpt_adamw_init(fpt_adamw *o, size_t n) {
    o->n = n;
    o->step = 0;
    o->m = fp_calloc(n ? n : 1, sizeof(float));
    o->v = fp_calloc(n ? n : 1, sizeof(float));
    if (!o->m || !o->v) { fpt_adamw_free(o); return FP_ENOMEM; }
    return FP_OK;
}

void fpt_adamw_free(fpt_adamw *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

/* One chunk of the AdamW update.  GCC does not vectorise sqrtf without -fno-math-errno, so the SSE form is
 * written out; it is the scalar expression operation by operation (IEEE sqrt and division, no FMA, same
 * order), so both give the same bits. */
static void adamw_chunk(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                        float step_size, float bc2s, float wdf, float b1, float b2, float eps) {
    size_t i = 0;
#ifdef __SSE2__
    const __m128 vwd = _mm_set1_ps(wdf), vb1 = _mm_set1_ps(b1), vb2 = _mm_set1_ps(b2), v1b1 = _mm_set1_ps(1.0f - b1),
                 v1b2 = _mm_set1_ps(1.0f - b2), vss = _mm_set1_ps(step_size), vbc = _mm_set1_ps(bc2s),
                 veps = _mm_set1_ps(eps);
    for (; i + 4 <= n; i += 4) {
        __m128 gi = _mm_loadu_ps(g + i);
        __m128 pi = _mm_mul_ps(_mm_loadu_ps(p + i), vwd);
        __m128 mi = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(m + i)), _mm_mul_ps(v1b1, gi));
        __m128 vi = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(v + i)), _mm_mul_ps(_mm_mul_ps(v1b2, gi), gi));
        __m128 den = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), vbc), veps);
        pi = _mm_sub_ps(pi, _mm_div_ps(_mm_mul_ps(vss, mi), den));
        _mm_storeu_ps(m + i, mi);
        _mm_storeu_ps(v + i, vi);
        _mm_storeu_ps(p + i, pi);
    }
#endif
    for (; i < n; i++) {
        float gi = g[i];
        p[i] *= wdf;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2s + eps);
    }
}

void fpt_adamw_update(float *p, const float *g, float *m, float *v, size_t n, double lr, long t,
                      const fpt_adamw_cfg *c, int decay) {
    /* torch: p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     *        p -= (lr / (1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps) */
    double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    float step_size = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
    float wdf = decay ? (float)(1.0 - lr * c->weight_decay) : 1.0f;
    const size_t CH = 16384;
    long nch = (long)((n + CH - 1) / CH);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < nch; i++) {
        size_t o = (size_t)i * CH, len = n - o < CH ? n - o : CH;
        adamw_chunk(p + o, g + o, m + o, v + o, len, step_size, bc2s, wdf, c->beta1, c->beta2, c->eps);
    }
}

int fpt_model_step(fpt_model *m, fpt_adamw *o, const fpt_adamw_cfg *c, double *grad_norm, double *lr_used) {
    size_t n = fpt_model_num_params(m);
    if (o->n != n) return fp_errorf(FP_ESTATE, "adamw: state has %zu elements, model %zu", o->n, n);
    float *P = fpt_model_params(m), *G = fpt_model_grads(m);
    /* the global norm over trainable parameters only */
    double s = 0;
    int np = fpt_model_param_count(m);
    for (int i = 0; i < np; i++) {
        const fpt_param *p = fpt_model_param(m, i);
        if (!p->trainable) continue;
        double q = fpt_grad_norm(G + p->offset, p->numel);
        s += q * q;
    }
    double norm = sqrt(s);
    if (c->max_grad_norm > 0) {
        double coef = c->max_grad_norm / (norm + 1e-6);
        if (coef < 1.0)
            for (int i = 0; i < np; i++) {
                const fpt_param *p = fpt_model_param(m, i);
                if (!p->trainable) continue;
                float cf = (float)coef, *g = G + p->offset;
                size_t pn = p->numel;
#pragma omp parallel for simd schedule(static) if (pn > 65536)
                for (size_t j = 0; j < pn; j++) g[j] *= cf;
            }
    }
    double lr = fpt_lr_at(c, o->step);
    o->step++;
    for (int i = 0; i < np; i++) {
        const fpt_param *p = fpt_model_param(m, i);
        if (!p->trainable) continue;
        fpt_adamw_update(P + p->offset, G + p->offset, o->m + p->offset, o->v + p->offset, p->numel, lr, o->step,
                         c, p->decay);
    }
    if (grad_norm) *grad_norm = norm;
    if (lr_used) *lr_used = lr;
    return FP_OK;
}
