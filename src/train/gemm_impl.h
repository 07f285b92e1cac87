/* f32 GEMM loops of the training ops for the avx2 and base levels: ops.c (baseline) and gemm_avx2.c
 * (built with -mavx2 by the Makefile's *_avx2.o rule) include this file with
 * FPT_GEMM_NAME defined.  The loops are written for the auto-vectoriser (omp simd).  Internal to src/train. */
#ifndef FPT_GEMM_NAME
#error define FPT_GEMM_NAME before including gemm_impl.h
#endif
#include <stddef.h>

#ifndef FPT_PAR_MIN
#define FPT_PAR_MIN 262144L /* below this much work a parallel region costs more than it saves */
#endif
#define TB 4  /* rows of inp per micro-tile */
#define NB 64 /* weight rows per cache tile */
#ifndef FPT_GEMM_LINKAGE
#define FPT_GEMM_LINKAGE
#endif

FPT_GEMM_LINKAGE void FPT_GEMM_NAME(fpt_linear_forward)(float *out, const float *inp, const float *w, const float *b,
                                                         int T, int K, int N) {
    // out [T,N] = inp [T,K] @ w[N,K]^T + b[N]
    // tiles: NB weight rows (kept in cache) x TB input rows (one micro-tile of 4 dot products per weight row);
    // nb is the outer loop so a thread's consecutive tiles reuse the same weight rows
    int ntb = (T + TB - 1) / TB, nnb = (N + NB - 1) / NB;
    long work = (long)T * K * N;
#pragma omp parallel for collapse(2) schedule(static) if (work > FPT_PAR_MIN)
    for (int nb = 0; nb < nnb; nb++) {
        for (int tb = 0; tb < ntb; tb++) {
            int t0 = tb * TB, t1 = t0 + TB < T ? t0 + TB : T;
            int n0 = nb * NB, n1 = n0 + NB < N ? n0 + NB : N;
            for (int n = n0; n < n1; n++) {
                const float *wr = w + (size_t)n * K;
                float bias = b ? b[n] : 0.0f;
                if (t1 - t0 == TB) {
                    const float *x0 = inp + (size_t)t0 * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
                    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
                    for (int k = 0; k < K; k++) {
                        float wk = wr[k];
                        a0 += x0[k] * wk;
                        a1 += x1[k] * wk;
                        a2 += x2[k] * wk;
                        a3 += x3[k] * wk;
                    }
                    out[(size_t)(t0 + 0) * N + n] = a0 + bias;
                    out[(size_t)(t0 + 1) * N + n] = a1 + bias;
                    out[(size_t)(t0 + 2) * N + n] = a2 + bias;
                    out[(size_t)(t0 + 3) * N + n] = a3 + bias;
                } else {
                    for (int t = t0; t < t1; t++) {
                        const float *x = inp + (size_t)t * K;
                        float a = 0;
#pragma omp simd reduction(+ : a)
                        for (int k = 0; k < K; k++) a += x[k] * wr[k];
                        out[(size_t)t * N + n] = a + bias;
                    }
                }
            }
        }
    }
}

FPT_GEMM_LINKAGE void FPT_GEMM_NAME(fpt_linear_backward)(float *dinp, float *dw, float *db, const float *dout,
                                                          const float *inp, const float *w, int T, int K, int N) {
    long work = (long)T * K * N;
    if (dinp) {
        // dinp[T,K] += dout[T,N] @ w[N,K]; a thread owns TB whole rows of dinp and streams each weight row once
        // per TB rows
        int ntb = (T + TB - 1) / TB;
#pragma omp parallel for schedule(static) if (work > FPT_PAR_MIN)
        for (int tb = 0; tb < ntb; tb++) {
            int t0 = tb * TB, t1 = t0 + TB < T ? t0 + TB : T;
            for (int n = 0; n < N; n++) {
                const float *wr = w + (size_t)n * K;
                for (int t = t0; t < t1; t++) {
                    float gn = dout[(size_t)t * N + n];
                    if (gn == 0.0f) continue;
                    float *dx = dinp + (size_t)t * K;
#pragma omp simd
                    for (int k = 0; k < K; k++) dx[k] += gn * wr[k];
                }
            }
        }
    }
    if (dw || db) {
        // dw[N,K] += dout^T[N,T] @ inp[T,K]; db[N] += sum_t dout[t,n]; a thread owns TB rows of dw and streams
        // each input row once per TB weight rows
        int nnb = (N + TB - 1) / TB;
#pragma omp parallel for schedule(static) if (work > FPT_PAR_MIN)
        for (int nb = 0; nb < nnb; nb++) {
            int n0 = nb * TB, n1 = n0 + TB < N ? n0 + TB : N;
            for (int n = n0; n < n1 && db; n++) {
                float bsum = 0.0f;
                for (int t = 0; t < T; t++) bsum += dout[(size_t)t * N + n];
                db[n] += bsum;
            }
            if (!dw) continue;
            for (int t = 0; t < T; t++) {
                const float *x = inp + (size_t)t * K;
                for (int n = n0; n < n1; n++) {
                    float gn = dout[(size_t)t * N + n];
                    if (gn == 0.0f) continue;
                    float *dwr = dw + (size_t)n * K;
#pragma omp simd
                    for (int k = 0; k < K; k++) dwr[k] += gn * x[k];
                }
            }
        }
    }
}

#undef TB
#undef NB
