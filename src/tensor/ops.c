/* Reference layer kernels: RMSNorm, rotary embedding, SwiGLU.  Plain f32 math matching HF's order of
 * operations (no fused multiply-add is assumed; -O2 on x86-64 does not contract). */
#include "tensor/ops.h"
#include <math.h>

void fp_rmsnorm_forward(float *out, const float *inp, const float *weight, float eps, int T, int C) {
#pragma omp parallel for schedule(static) if (T > 16)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C;
        float *o = out + (size_t)t * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < C; i++) o[i] = weight[i] * (x[i] * r);
    }
}

void fp_rope_inv_freq(float *inv_freq, double theta, int d) {
    /* HF: 1.0 / (base ** (torch.arange(0, d, 2).float() / d)), all float32. */
    float base = (float)theta;
    for (int i = 0; i < d / 2; i++) {
        float e = (float)(2 * i) / (float)d;
        float p = (float)pow((double)base, (double)e); /* correctly rounded float32 power */
        inv_freq[i] = 1.0f / p;
    }
}

void fp_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, const int *pos, int T, int d) {
    int half = d / 2;
#pragma omp parallel for schedule(static) if (T > 64)
    for (int t = 0; t < T; t++) {
        float p = (float)(pos ? pos[t] : t);
        for (int i = 0; i < half; i++) {
            float a = p * inv_freq[i];
            cos_t[(size_t)t * half + i] = (float)cos((double)a);
            sin_t[(size_t)t * half + i] = (float)sin((double)a);
        }
    }
}

void fp_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int nh, int d) {
    int half = d / 2;
#pragma omp parallel for schedule(static) if (T > 64)
    for (int t = 0; t < T; t++) {
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < nh; h++) {
            float *xh = x + ((size_t)t * nh + h) * d;
            for (int i = 0; i < half; i++) {
                float x1 = xh[i], x2 = xh[i + half];
                xh[i] = x1 * c[i] - x2 * s[i];
                xh[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

void fp_swiglu_forward(float *out, const float *gate, const float *up, int T, int C) {
    size_t n = (size_t)T * C;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}
