/* Training ops: f32 forward/backward pairs (backward accumulates).  See train.h for shapes. */
#include "train/train.h"
#include "tensor/kernels.h"
#include "train/gemm_fast.h"
#include <math.h>
#include <string.h>

#define FPT_PAR_MIN 262144L /* below this much work a parallel region costs more than it saves */

/* ---------------------------------------------------------------- embedding */

void fpt_embedding_forward(float *out, const int *tokens, const float *wte, int T, int C) {
    // out [T,C], wte [V,C]
    for (int t = 0; t < T; t++) memcpy(out + (size_t)t * C, wte + (size_t)tokens[t] * C, sizeof(float) * C);
}

void fpt_embedding_backward(float *dwte, const float *dout, const int *tokens, int T, int C) {
    // serial: repeated tokens would race
    for (int t = 0; t < T; t++) {
        float *d = dwte + (size_t)tokens[t] * C;
        const float *g = dout + (size_t)t * C;
        for (int c = 0; c < C; c++) d[c] += g[c];
    }
}

/* ---------------------------------------------------------------- RMSNorm */

void fpt_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int T, int C, float eps) {
    // out [T,C], rstd [T], inp [T,C], w [C]
#pragma omp parallel for schedule(static) if ((long)T * C > FPT_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C;
        float *o = out + (size_t)t * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[t] = r;
        for (int c = 0; c < C; c++) o[c] = w[c] * (x[c] * r);
    }
}

void fpt_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                          const float *rstd, int T, int C) {
    // xhat = x*rstd; out = w*xhat
    // dw += sum_t dout*xhat;  dx = rstd * (dxhat - xhat * mean(dxhat*xhat)), dxhat = dout*w
    if (dinp) {
#pragma omp parallel for schedule(static) if ((long)T * C > FPT_PAR_MIN)
        for (int t = 0; t < T; t++) {
            const float *x = inp + (size_t)t * C, *g = dout + (size_t)t * C;
            float *dx = dinp + (size_t)t * C;
            float r = rstd[t], dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < C; c++) dot += g[c] * w[c] * x[c] * r;
            dot /= (float)C;
            for (int c = 0; c < C; c++) dx[c] += r * (g[c] * w[c] - x[c] * r * dot);
        }
    }
    if (dw) {
        for (int t = 0; t < T; t++) {
            const float *x = inp + (size_t)t * C, *g = dout + (size_t)t * C;
            float r = rstd[t];
            for (int c = 0; c < C; c++) dw[c] += g[c] * x[c] * r;
        }
    }
}

/* ---------------------------------------------------------------- linear (f32 GEMM) */

/* The GEMM kernels: the blocked, packed AVX-512 kernel of gemm_fast_avx512.c at the avx512 level, the
 * auto-vectorised loops of gemm_impl.h at the avx2 and base levels; dispatched at run time (FLUXPRM_KERNEL caps
 * the level). */
#define FPT_GEMM_NAME(f) f##_base
#define FPT_GEMM_LINKAGE static
#include "train/gemm_impl.h"
#undef FPT_GEMM_NAME
#undef FPT_GEMM_LINKAGE
void fpt_linear_forward_avx2(float *out, const float *inp, const float *w, const float *b, int T, int K, int N);
void fpt_linear_backward_avx2(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                              const float *w, int T, int K, int N);

void fpt_linear_forward(float *out, const float *inp, const float *w, const float *b, int T, int K, int N) {
    // out [T,N] = inp [T,K] @ w[N,K]^T + b[N]
    int lv = fp_kernel_level();
    if (lv >= FP_KERN_AVX512) fpt_linear_forward_fast(out, inp, w, b, T, K, N);
    else if (lv >= FP_KERN_AVX2) fpt_linear_forward_avx2(out, inp, w, b, T, K, N);
    else fpt_linear_forward_base(out, inp, w, b, T, K, N);
}

void fpt_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, int T, int K, int N) {
    // dinp [T,K] += dout [T,N] @ w [N,K];  dw [N,K] += dout^T @ inp;  db [N] += colsum(dout)
    int lv = fp_kernel_level();
    if (lv >= FP_KERN_AVX512) fpt_linear_backward_fast(dinp, dw, db, dout, inp, w, T, K, N);
    else if (lv >= FP_KERN_AVX2) fpt_linear_backward_avx2(dinp, dw, db, dout, inp, w, T, K, N);
    else fpt_linear_backward_base(dinp, dw, db, dout, inp, w, T, K, N);
}

/* ---------------------------------------------------------------- RoPE */

void fpt_rope_table(float *cos_t, float *sin_t, int pos0, int T, int D, double theta) {
    // cos_t, sin_t [T, D/2]
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf((float)theta, (float)(2 * i) / (float)D);
        for (int t = 0; t < T; t++) {
            float ang = (float)(pos0 + t) * inv_freq;
            cos_t[(size_t)t * half + i] = cosf(ang);
            sin_t[(size_t)t * half + i] = sinf(ang);
        }
    }
}

void fpt_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int nh, int D) {
    // x [T, nh, D]: x1' = x1 cos - x2 sin; x2' = x2 cos + x1 sin (x1 = first half, x2 = second half)
    int half = D / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + ((size_t)t * nh + h) * D;
            for (int i = 0; i < half; i++) {
                float a = v[i], bb = v[i + half];
                v[i] = a * c[i] - bb * s[i];
                v[i + half] = bb * c[i] + a * s[i];
            }
        }
    }
}

void fpt_rope_backward(float *dx, const float *cos_t, const float *sin_t, int T, int nh, int D) {
    // transpose of the forward rotation
    int half = D / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < nh; h++) {
            float *v = dx + ((size_t)t * nh + h) * D;
            for (int i = 0; i < half; i++) {
                float a = v[i], bb = v[i + half];
                v[i] = a * c[i] + bb * s[i];
                v[i + half] = bb * c[i] - a * s[i];
            }
        }
    }
}

/* ---------------------------------------------------------------- causal GQA attention */

void fpt_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                           int T, int NH, int NKV, int D) {
    if (fp_kernel_level() >= FP_KERN_AVX512) { /* per-head blocked GEMMs (gemm_fast_avx512.c) */
        fpt_attention_forward_fast(out, att, q, k, v, T, NH, NKV, D);
        return;
    }
    // q [T,NH,D], k/v [T,NKV,D], att [NH,T,T], out [T,NH,D]
    int group = NH / NKV;
    float scale = 1.0f / sqrtf((float)D);
    long work = (long)NH * T * T * D;
#pragma omp parallel for collapse(2) schedule(dynamic, 8) if (work > FPT_PAR_MIN)
    for (int h = 0; h < NH; h++) {
        for (int t = 0; t < T; t++) {
            int g = h / group;
            const float *qt = q + ((size_t)t * NH + h) * D;
            float *row = att + ((size_t)h * T + t) * T;
            float mx = -INFINITY;
            for (int s = 0; s <= t; s++) {
                const float *ks = k + ((size_t)s * NKV + g) * D;
                float a = 0.0f;
#pragma omp simd reduction(+ : a)
                for (int d = 0; d < D; d++) a += qt[d] * ks[d];
                a *= scale;
                row[s] = a;
                if (a > mx) mx = a;
            }
            float sum = 0.0f;
            for (int s = 0; s <= t; s++) {
                row[s] = expf(row[s] - mx);
                sum += row[s];
            }
            float inv = 1.0f / sum;
            for (int s = 0; s <= t; s++) row[s] *= inv;
            for (int s = t + 1; s < T; s++) row[s] = 0.0f;
            float *o = out + ((size_t)t * NH + h) * D;
            for (int d = 0; d < D; d++) o[d] = 0.0f;
            for (int s = 0; s <= t; s++) {
                const float *vs = v + ((size_t)s * NKV + g) * D;
                float p = row[s];
#pragma omp simd
                for (int d = 0; d < D; d++) o[d] += p * vs[d];
            }
        }
    }
}

void fpt_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                            const float *att, const float *q, const float *k, const float *v,
                            int T, int NH, int NKV, int D) {
    if (fp_kernel_level() >= FP_KERN_AVX512) {
        fpt_attention_backward_fast(dq, dk, dv, scratch, dout, att, q, k, v, T, NH, NKV, D);
        return;
    }
    // pass 1 (rows t of each head): datt[t,s] = dy_t . v_s; dpre = att*(datt - sum_s att*datt);
    //   dq_t += scale * sum_s dpre[t,s] k_s.  dpre is kept in scratch [NH,T,T].
    // pass 2 (columns s of each kv head): dk_s += scale * sum_{h in group, t>=s} dpre[h,t,s] q_{h,t};
    //   dv_s += sum_{h in group, t>=s} att[h,t,s] dy_{h,t}.
    int group = NH / NKV;
    float scale = 1.0f / sqrtf((float)D);
    long work = (long)NH * T * T * D;
#pragma omp parallel for collapse(2) schedule(dynamic, 8) if (work > FPT_PAR_MIN)
    for (int h = 0; h < NH; h++) {
        for (int t = 0; t < T; t++) {
            int g = h / group;
            const float *dy = dout + ((size_t)t * NH + h) * D;
            const float *row = att + ((size_t)h * T + t) * T;
            float *dpre = scratch + ((size_t)h * T + t) * T;
            float dotsum = 0.0f;
            for (int s = 0; s <= t; s++) {
                const float *vs = v + ((size_t)s * NKV + g) * D;
                float a = 0.0f;
#pragma omp simd reduction(+ : a)
                for (int d = 0; d < D; d++) a += dy[d] * vs[d];
                dpre[s] = a;
                dotsum += a * row[s];
            }
            for (int s = 0; s <= t; s++) dpre[s] = row[s] * (dpre[s] - dotsum);
            if (dq) {
                float *dqt = dq + ((size_t)t * NH + h) * D;
                for (int s = 0; s <= t; s++) {
                    const float *ks = k + ((size_t)s * NKV + g) * D;
                    float c = scale * dpre[s];
#pragma omp simd
                    for (int d = 0; d < D; d++) dqt[d] += c * ks[d];
                }
            }
        }
    }
    if (!dk && !dv) return;
#pragma omp parallel for collapse(2) schedule(dynamic, 8) if (work > FPT_PAR_MIN)
    for (int g = 0; g < NKV; g++) {
        for (int s = 0; s < T; s++) {
            float *dks = dk ? dk + ((size_t)s * NKV + g) * D : NULL;
            float *dvs = dv ? dv + ((size_t)s * NKV + g) * D : NULL;
            for (int h = g * group; h < (g + 1) * group; h++) {
                for (int t = s; t < T; t++) {
                    const float *qt = q + ((size_t)t * NH + h) * D;
                    const float *dy = dout + ((size_t)t * NH + h) * D;
                    float cp = scale * scratch[((size_t)h * T + t) * T + s];
                    float ca = att[((size_t)h * T + t) * T + s];
                    if (dks) {
#pragma omp simd
                        for (int d = 0; d < D; d++) dks[d] += cp * qt[d];
                    }
                    if (dvs) {
#pragma omp simd
                        for (int d = 0; d < D; d++) dvs[d] += ca * dy[d];
                    }
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- SwiGLU, residual, ReLU */

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

void fpt_swiglu_forward(float *out, const float *gate, const float *up, int T, int F) {
    // out [T,F] = silu(gate) * up
    size_t n = (size_t)T * F;
#pragma omp parallel for schedule(static) if ((long)n > FPT_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoidf_(gate[i]) * up[i];
}

void fpt_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int T, int F) {
    // d silu(g)/dg = sig(g) * (1 + g*(1 - sig(g)))
    size_t n = (size_t)T * F;
#pragma omp parallel for schedule(static) if ((long)n > FPT_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = sigmoidf_(g);
        if (dup) dup[i] += dout[i] * g * sg;
        if (dgate) dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

void fpt_residual_forward(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void fpt_residual_backward(float *da, float *db, const float *dout, size_t n) {
    if (da) for (size_t i = 0; i < n; i++) da[i] += dout[i];
    if (db) for (size_t i = 0; i < n; i++) db[i] += dout[i];
}

void fpt_relu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void fpt_relu_backward(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) if (out[i] > 0.0f) dinp[i] += dout[i];
}

/* ---------------------------------------------------------------- heads */

void fpt_prm_head_forward(float *logits, float *pre, float *act, const float *inp, const float *w0,
                          const float *b0, const float *w2, const float *b2, int T, int C) {
    // pre [T,C] = inp @ w0^T + b0; act = relu(pre); logits [T,2] = act @ w2^T + b2
    fpt_linear_forward(pre, inp, w0, b0, T, C, C);
    fpt_relu_forward(act, pre, (size_t)T * C);
    fpt_linear_forward(logits, act, w2, b2, T, C, 2);
}

void fpt_prm_head_backward(float *dinp, float *dw0, float *db0, float *dw2, float *db2, float *scratch,
                           const float *dlogits, const float *inp, const float *pre, const float *act,
                           const float *w0, const float *w2, int T, int C) {
    (void)pre;
    // scratch [T,C]: dact, then dpre (relu mask applied in place)
    size_t n = (size_t)T * C;
    memset(scratch, 0, n * sizeof(float));
    fpt_linear_backward(scratch, dw2, db2, dlogits, act, w2, T, C, 2);
    for (size_t i = 0; i < n; i++) if (!(act[i] > 0.0f)) scratch[i] = 0.0f;
    fpt_linear_backward(dinp, dw0, db0, scratch, inp, w0, T, C, C);
}

void fpt_scalar_head_forward(float *prob, const float *inp, const float *w, const float *b, int T, int C) {
    // prob [T] = sigmoid(inp [T,C] @ w[1,C]^T + b[1])
    fpt_linear_forward(prob, inp, w, b, T, C, 1);
    for (int t = 0; t < T; t++) prob[t] = sigmoidf_(prob[t]);
}

void fpt_scalar_head_backward(float *dinp, float *dw, float *db, const float *dprob, const float *prob,
                              const float *inp, const float *w, int T, int C) {
    // dz = dprob * p(1-p); then the linear backward
    float dz[256];
    for (int t0 = 0; t0 < T; t0 += 256) {
        int n = T - t0 < 256 ? T - t0 : 256;
        for (int i = 0; i < n; i++) dz[i] = dprob[t0 + i] * prob[t0 + i] * (1.0f - prob[t0 + i]);
        fpt_linear_backward(dinp ? dinp + (size_t)t0 * C : NULL, dw, db, dz, inp + (size_t)t0 * C, w, n, C, 1);
    }
}

/* ---------------------------------------------------------------- LoRA */

void fpt_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B, float s,
                      int T, int K, int N, int r) {
    // xa [T,r] = inp [T,K] @ A[r,K]^T;  out [T,N] += s * xa @ B[N,r]^T
    fpt_linear_forward(xa, inp, A, NULL, T, K, r);
#pragma omp parallel for schedule(static) if ((long)T * N * r > FPT_PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *x = xa + (size_t)t * r;
        float *o = out + (size_t)t * N;
        for (int n = 0; n < N; n++) {
            const float *b = B + (size_t)n * r;
            float a = 0.0f;
            for (int j = 0; j < r; j++) a += x[j] * b[j];
            o[n] += s * a;
        }
    }
}

void fpt_lora_backward(float *dinp, float *dA, float *dB, float *scratch, const float *dout, const float *inp,
                       const float *xa, const float *A, const float *B, float s, int T, int K, int N, int r) {
    // dxa [T,r] = s * dout [T,N] @ B [N,r]  (kept in scratch)
#pragma omp parallel for schedule(static) if ((long)T * N * r > FPT_PAR_MIN)
    for (int t = 0; t < T; t++) {
        float *d = scratch + (size_t)t * r;
        const float *g = dout + (size_t)t * N;
        for (int j = 0; j < r; j++) d[j] = 0.0f;
        for (int n = 0; n < N; n++) {
            float gn = s * g[n];
            const float *b = B + (size_t)n * r;
            for (int j = 0; j < r; j++) d[j] += gn * b[j];
        }
    }
    // dB [N,r] += s * dout^T @ xa
    if (dB) {
#pragma omp parallel for schedule(static) if ((long)T * N * r > FPT_PAR_MIN)
        for (int n = 0; n < N; n++) {
            float *db = dB + (size_t)n * r;
            for (int t = 0; t < T; t++) {
                float gn = s * dout[(size_t)t * N + n];
                const float *x = xa + (size_t)t * r;
                for (int j = 0; j < r; j++) db[j] += gn * x[j];
            }
        }
    }
    // dinp += dxa @ A;  dA += dxa^T @ inp
    fpt_linear_backward(dinp, dA, NULL, scratch, inp, A, T, K, r);
}
