/* Causal grouped-query attention as a tiled online softmax (flash-attention style, f32, no T x T buffer). */
#include "tensor/ops.h"
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#define ATT_BQ 32 /* query rows per task */
#define ATT_BK 64 /* keys per block */

/* exp(x) for x <= 0 (softmax weights), vectorisable: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-7
 * Taylor polynomial (truncation < 1e-8 relative), 2^n by exponent bits.  Within 2 ulp of expf. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { uint32_t u; float f; } sc;
    sc.u = (uint32_t)((int32_t)n + 127) << 23;
    return p * sc.f;
}

/* GCC vector extensions: 16 floats, lowered to zmm / 2 ymm / 4 xmm by each target clone. */
#pragma GCC diagnostic ignored "-Wpsabi" /* v16 helpers are always inlined: no ABI crossing */
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
static inline v16 ld16(const float *p) { return *(const v16u *)p; }
static inline void st16(float *p, v16 x) { *(v16u *)p = x; }

typedef struct {
    float *out;
    const float *q, *k, *v;
    const int *qpos, *kstart;
    int nq, nh, nkv, d;
    float scale;
} att_args;

/* One task: query rows [i0, i1) of head h.  scratch: (ATT_BQ + 1) * d + d * ATT_BK floats.  Compiled for
 * AVX-512, AVX2 and the baseline (GCC target clones, chosen at load time by the CPU). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void att_task(const att_args *A, int i0, int i1, int h, float *scratch) {
    const int d = A->d, kh = h / (A->nh / A->nkv);
    const size_t qs = (size_t)A->nh * d, kvs = (size_t)A->nkv * d;
    float *acc = scratch, *bacc = acc + (size_t)ATT_BQ * d, *kt = bacc + d; /* kt: [d][ATT_BK] */
    float m[ATT_BQ], l[ATT_BQ], s[ATT_BK];
    int pmax = 0, kmin = INT_MAX;
    for (int i = i0; i < i1; i++) {
        int p = A->qpos ? A->qpos[i] : i, ks = A->kstart ? A->kstart[i] : 0;
        if (p > pmax) pmax = p;
        if (ks < kmin) kmin = ks;
        m[i - i0] = -INFINITY;
        l[i - i0] = 0.0f;
        for (int x = 0; x < d; x++) acc[(size_t)(i - i0) * d + x] = 0.0f;
    }
    for (int kb = kmin; kb <= pmax; kb += ATT_BK) {
        int kn = pmax - kb + 1 < ATT_BK ? pmax - kb + 1 : ATT_BK;
        /* K block transposed so that scores vectorise across keys: kt[x][j] = k[kb + j][x] */
        for (int j = 0; j < ATT_BK; j++) {
            const float *kj = A->k + (size_t)(kb + (j < kn ? j : 0)) * kvs + (size_t)kh * d;
            for (int x = 0; x < d; x++) kt[(size_t)x * ATT_BK + j] = j < kn ? kj[x] : 0.0f;
        }
        for (int i = i0; i < i1; i++) {
            int p = A->qpos ? A->qpos[i] : i;
            int ks = A->kstart ? A->kstart[i] : 0;
            if (kb > p || kb + ATT_BK <= ks) continue;
            int n = p - kb + 1 < ATT_BK ? p - kb + 1 : ATT_BK; /* keys kb+jlo .. kb+n-1 */
            int jlo = ks > kb ? ks - kb : 0;
            const float *qi = A->q + (size_t)i * qs + (size_t)h * d;
            { /* s[0..64) = q . k_j: four 16-wide register accumulators, sequential over x */
                v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
                for (int x = 0; x < d; x++) {
                    float qx = qi[x];
                    const float *kx = kt + (size_t)x * ATT_BK;
                    s0 += qx * ld16(kx);
                    s1 += qx * ld16(kx + 16);
                    s2 += qx * ld16(kx + 32);
                    s3 += qx * ld16(kx + 48);
                }
                float sc = A->scale;
                st16(s, s0 * sc);
                st16(s + 16, s1 * sc);
                st16(s + 32, s2 * sc);
                st16(s + 48, s3 * sc);
            }
            for (int j = n; j < ATT_BK; j++) s[j] = -INFINITY; /* causal mask (diagonal block) */
            for (int j = 0; j < jlo; j++) s[j] = -INFINITY;    /* keys of an earlier packed sequence */
            float bmax = -INFINITY;
#pragma omp simd reduction(max : bmax)
            for (int j = 0; j < ATT_BK; j++) bmax = s[j] > bmax ? s[j] : bmax;
            float mold = m[i - i0], mnew = bmax > mold ? bmax : mold;
            float corr = mold == -INFINITY ? 0.0f : exp_neg(mold - mnew);
            float bsum = 0.0f;
#pragma omp simd reduction(+ : bsum)
            for (int j = 0; j < ATT_BK; j++) {
                float e = j < n && j >= jlo ? exp_neg(s[j] - mnew) : 0.0f;
                s[j] = e;
                bsum += e;
            }
            /* block partial sums, then one rescaled add: long rows (20k+ keys) keep blocked-summation accuracy */
            float *a = acc + (size_t)(i - i0) * d;
            const float *vb = A->v + (size_t)kb * kvs + (size_t)kh * d;
            if (d % 16 == 0) {
                for (int x0 = 0; x0 < d; x0 += 64) {
                    int nv = (d - x0) / 16 < 4 ? (d - x0) / 16 : 4;
                    v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                    for (int j = jlo; j < n; j++) {
                        const float *vj = vb + (size_t)j * kvs + x0;
                        float pj = s[j];
                        a0 += pj * ld16(vj);
                        if (nv > 1) a1 += pj * ld16(vj + 16);
                        if (nv > 2) a2 += pj * ld16(vj + 32);
                        if (nv > 3) a3 += pj * ld16(vj + 48);
                    }
                    st16(a + x0, ld16(a + x0) * corr + a0);
                    if (nv > 1) st16(a + x0 + 16, ld16(a + x0 + 16) * corr + a1);
                    if (nv > 2) st16(a + x0 + 32, ld16(a + x0 + 32) * corr + a2);
                    if (nv > 3) st16(a + x0 + 48, ld16(a + x0 + 48) * corr + a3);
                }
            } else {
#pragma omp simd
                for (int x = 0; x < d; x++) bacc[x] = 0.0f;
                for (int j = jlo; j < n; j++) {
                    const float *vj = vb + (size_t)j * kvs;
                    float pj = s[j];
#pragma omp simd
                    for (int x = 0; x < d; x++) bacc[x] += pj * vj[x];
                }
#pragma omp simd
                for (int x = 0; x < d; x++) a[x] = a[x] * corr + bacc[x];
            }
            m[i - i0] = mnew;
            l[i - i0] = l[i - i0] * corr + bsum;
        }
    }
    for (int i = i0; i < i1; i++) {
        float inv = 1.0f / l[i - i0];
        float *o = A->out + (size_t)i * qs + (size_t)h * d;
        for (int x = 0; x < d; x++) o[x] = acc[(size_t)(i - i0) * d + x] * inv;
    }
}

int fp_attention_forward(float *out, const float *q, const float *k, const float *v, const int *qpos,
                         const int *kstart, int nq, int T, int nh, int nkv, int d) {
    (void)T;
    att_args A = {out, q, k, v, qpos, kstart, nq, nh, nkv, d, (float)(1.0 / sqrt((double)d))};
    int ntiles = (nq + ATT_BQ - 1) / ATT_BQ;
    int nth = omp_get_max_threads();
    size_t per = (ATT_BQ + 1) * (size_t)d + (size_t)d * ATT_BK + 16;
    float *scratch = malloc(sizeof(float) * per * (size_t)nth);
    if (!scratch) return -1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
    for (int task = 0; task < nh * ntiles; task++) {
        /* Largest tiles first: the last query tiles see the most keys. */
        int tile = ntiles - 1 - task / nh, h = task % nh;
        int i0 = tile * ATT_BQ, i1 = i0 + ATT_BQ < nq ? i0 + ATT_BQ : nq;
        att_task(&A, i0, i1, h, scratch + per * (size_t)omp_get_thread_num());
    }
    free(scratch);
    return 0;
}

void fp_attention_forward_ref(float *out, const float *q, const float *k, const float *v, const int *qpos,
                              const int *kstart, int nq,
                              int T, int nh, int nkv, int d) {
    int group = nh / nkv;
    size_t qs = (size_t)nh * d, kvs = (size_t)nkv * d;
    double scale = 1.0 / sqrt((double)d);
    double *w = malloc(sizeof(double) * (size_t)(T > 0 ? T : 1));
    for (int i = 0; i < nq; i++) {
        int p = qpos ? qpos[i] : i;
        for (int h = 0; h < nh; h++) {
            const float *qi = q + (size_t)i * qs + (size_t)h * d;
            double mx = -INFINITY, sum = 0;
            int ks = kstart ? kstart[i] : 0;
            for (int j = ks; j <= p; j++) {
                const float *kj = k + (size_t)j * kvs + (size_t)(h / group) * d;
                double s = 0;
                for (int x = 0; x < d; x++) s += (double)qi[x] * kj[x];
                w[j] = s * scale;
                if (w[j] > mx) mx = w[j];
            }
            for (int j = ks; j <= p; j++) sum += (w[j] = exp(w[j] - mx));
            float *o = out + (size_t)i * qs + (size_t)h * d;
            for (int x = 0; x < d; x++) {
                double a = 0;
                for (int j = ks; j <= p; j++) a += w[j] * v[(size_t)j * kvs + (size_t)(h / group) * d + x];
                o[x] = (float)(a / sum);
            }
        }
    }
    free(w);
}
