/* Causal grouped-query attention as a tiled online softmax (flash-attention style, no T x T buffer).
 * Dispatch (fp_attention_forward_level):
 *   avx512 level           -> attention_avx512.c: exact = register-blocked f32 kernel ("avx512-f32");
 *                             fast (exact=0) with AMX-BF16 and d % 32 == 0 = tdpbf16ps kernel ("amx-bf16"),
 *                             else with AVX512-BF16 where preferred (AMD) and d % 32 == 0 = vdpbf16ps kernel
 *                             ("avx512-bf16dp"), else the f32 kernel
 *   avx2 level / ref level -> the one-row-at-a-time f32 kernel below, compiled for AVX2+FMA ("avx2-f32") or
 *                             the baseline ISA ("generic-f32"); the fast path falls back to it. */
#include "tensor/ops.h"
#include "tensor/kernels.h"
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#define ATT_BQ 32 /* query rows per task */
#define ATT_BK 64 /* keys per block */

/* exp(x) for x <= 0 (softmax weights), vectorisable: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-7
 * Taylor polynomial (truncation < 1e-8 relative), 2^n by exponent bits.  Within 2 ulp of expf. */
static inline __attribute__((always_inline)) float exp_neg(float x) {
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
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
#define ld16(p) (*(const v16u *)(p))
#define st16(p, x) (*(v16u *)(p) = (x))

typedef struct {
    float *out;
    const float *q, *k, *v;
    const int *qpos, *kstart;
    int nq, nh, nkv, d;
    float scale;
} att_args;

/* One task: query rows [i0, i1) of head h.  scratch: (ATT_BQ + 1) * d + d * ATT_BK floats.  Instantiated for
 * AVX2 + FMA and for the baseline ISA (the avx2 and ref kernel levels). */
static inline __attribute__((always_inline)) void att_task(const att_args *A, int i0, int i1, int h,
                                                            float *scratch) {
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

__attribute__((target("avx2,fma"))) static void att_task_avx2(const att_args *A, int i0, int i1, int h,
                                                                 float *scratch) {
    att_task(A, i0, i1, h, scratch);
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))) static void
att_task_avx512(const att_args *A, int i0, int i1, int h, float *scratch) {
    att_task(A, i0, i1, h, scratch);
}
static void att_task_generic(const att_args *A, int i0, int i1, int h, float *scratch) {
    att_task(A, i0, i1, h, scratch);
}

/* The f32 kernel above for all heads and query tiles; isa: 0 baseline, 1 AVX2 + FMA, 2 AVX-512. */
static int att_rows(int isa, float *out, const float *q, const float *k, const float *v, const int *qpos,
                    const int *kstart, int nq, int nh, int nkv, int d) {
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
        float *scr = scratch + per * (size_t)omp_get_thread_num();
        if (isa == 2) att_task_avx512(&A, i0, i1, h, scr);
        else if (isa == 1) att_task_avx2(&A, i0, i1, h, scr);
        else att_task_generic(&A, i0, i1, h, scr);
    }
    free(scratch);
    return 0;
}

/* Which kernel fp_attention_forward_level runs. */
enum { ATT_GENERIC, ATT_AVX2, ATT_ROW512, ATT_AVX512, ATT_DP, ATT_AMX };
static int att_kernel(int level, int exact, int fast, int d) {
    int max = fp_cpu_max_kernel();
    if (level > max) level = max;
    if (exact == 2) return level >= FP_KERN_AVX512 ? ATT_ROW512 : level >= FP_KERN_AVX2 ? ATT_AVX2 : ATT_GENERIC;
    if (level >= FP_KERN_AVX512) {
        if (exact || fast == FP_ATT_FAST_F32 || !fp_cpu_has_avx512bf16()) return ATT_AVX512;
        if (fast == FP_ATT_FAST_AUTO && d % 32 == 0 && d <= FP_ATT_AMX_MAX_D && fp_cpu_has_amx_bf16()) return ATT_AMX;
        /* the shapes the AMX kernel takes: fast precision rounds attention on the same models on every machine */
        if (d % 32 == 0 && (fast == FP_ATT_FAST_DP || fp_cpu_prefer_bf16_dp())) return ATT_DP;
        return ATT_AVX512;
    }
    return level >= FP_KERN_AVX2 ? ATT_AVX2 : ATT_GENERIC;
}

const char *fp_attention_kernel_name(int level, int exact, int fast, int d) {
    switch (att_kernel(level, exact, fast, d)) {
    case ATT_AMX: return "amx-bf16";
    case ATT_DP: return "avx512-bf16dp";
    case ATT_AVX512: return "avx512-f32";
    case ATT_AVX2: return "avx2-f32";
    case ATT_ROW512: return "avx512-f32-rows";
    }
    return "generic-f32";
}

int fp_attention_forward_level(int level, int exact, int fast, float *out, const float *q, const float *k,
                               const float *v, const int *qpos, const int *kstart, int nq, int T, int nh,
                               int nkv, int d) {
    (void)T;
    if (nq <= 0 || nh <= 0 || d <= 0) return 0;
    int kern = att_kernel(level, exact, fast, d);
    if (kern >= ATT_AVX512)
        return fp_attention_avx512(kern == ATT_AMX ? FP_ATT_AMX : kern == ATT_DP ? FP_ATT_DP : FP_ATT_F32, out, NULL, q,
                                   k, v, qpos, kstart, nq, nh, nkv, d);
    return att_rows(kern == ATT_ROW512 ? 2 : kern == ATT_AVX2, out, q, k, v, qpos, kstart, nq, nh, nkv, d);
}

int fp_attention_forward_ex(int exact, float *out, const float *q, const float *k, const float *v, const int *qpos,
                            const int *kstart, int nq, int T, int nh, int nkv, int d) {
    return fp_attention_forward_level(fp_kernel_level(), exact, FP_ATT_FAST_AUTO, out, q, k, v, qpos, kstart, nq, T, nh,
                                      nkv, d);
}

int fp_attention_forward_tiles(uint16_t *otiles, const float *q, const float *k, const float *v, const int *qpos,
                               const int *kstart, int nq, int T, int nh, int nkv, int d) {
    (void)T;
    if (nq <= 0 || nh <= 0 || d <= 0 || att_kernel(fp_kernel_level(), 0, FP_ATT_FAST_AUTO, d) != ATT_AMX) return 1;
    return fp_attention_avx512(FP_ATT_AMX, NULL, otiles, q, k, v, qpos, kstart, nq, nh, nkv, d);
}

int fp_attention_forward(float *out, const float *q, const float *k, const float *v, const int *qpos,
                         const int *kstart, int nq, int T, int nh, int nkv, int d) {
    return fp_attention_forward_ex(1, out, q, k, v, qpos, kstart, nq, T, nh, nkv, d);
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
