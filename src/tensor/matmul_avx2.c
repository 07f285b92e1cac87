/* AVX2+FMA GEMM kernel for fp_matmul_forward (all weight dtypes), for CPUs without AVX-512.
 * Compiled with -mavx2 -mfma -mf16c.  Same scheme as matmul_avx512.c: jobs = (panel of 16 weight rows) x
 * (block of T rows) over OpenMP; each job walks K in chunks of KC, converts the chunk of its 16 weight
 * rows to f32 into a per-thread panel [KC][16], and runs a 6 x 16 register tile (12 ymm accumulators)
 * over its rows.  Activations stay f32 (no rounding): results match the reference up to summation order. */
#include "tensor/kernels.h"
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define A2_MR 6
#define A2_NR 16
#define A2_KC 256 /* multiple of 32 (q block); panel = 256 * 16 * 4 B = 16 KiB */

/* One row segment [k0, k0+kc) of W row n converted to f32 into dst (kc elements). */
static void row_seg_f32(float *dst, const void *w, fp_dtype wt, size_t rb, int n, int k0, int kc) {
    const uint8_t *r = (const uint8_t *)w + (size_t)n * rb;
    int k = 0;
    switch (wt) {
    case FP_F32: memcpy(dst, (const float *)r + k0, (size_t)kc * 4); return;
    case FP_BF16: {
        const uint16_t *h = (const uint16_t *)r + k0;
        for (; k + 8 <= kc; k += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + k)));
            _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
        for (; k < kc; k++) dst[k] = fp_bf16_to_f32(h[k]);
        return;
    }
    case FP_F16: {
        const uint16_t *h = (const uint16_t *)r + k0;
        for (; k + 8 <= kc; k += 8) _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + k))));
        for (; k < kc; k++) dst[k] = fp_f16_to_f32(h[k]);
        return;
    }
    case FP_Q8_0: fp_row_to_f32(dst, r + (size_t)(k0 / 32) * 34, wt, kc); return;
    case FP_Q4_0: fp_row_to_f32(dst, r + (size_t)(k0 / 32) * 18, wt, kc); return;
    }
}

static void pack(float *panel, float *tmp, const void *w, fp_dtype wt, size_t rb, int n0, int nvalid, int k0, int kc) {
    for (int c = 0; c < A2_NR; c++) {
        if (c < nvalid) {
            row_seg_f32(tmp, w, wt, rb, n0 + c, k0, kc);
            for (int k = 0; k < kc; k++) panel[k * A2_NR + c] = tmp[k];
        } else {
            for (int k = 0; k < kc; k++) panel[k * A2_NR + c] = 0.0f;
        }
    }
}

AI void tile(const int MR, const float *A, size_t lda, const float *B, int kc, float *C, size_t ldc, int nvalid,
             int accumulate, const float *bias) {
    __m256 acc[A2_MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(B + (size_t)k * A2_NR), b1 = _mm256_load_ps(B + (size_t)k * A2_NR + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m256 x = _mm256_broadcast_ss(A + i * lda + k);
            acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        float *c = C + i * ldc;
        if (nvalid == A2_NR) {
            __m256 a0 = accumulate ? _mm256_loadu_ps(c) : bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
            __m256 a1 = accumulate ? _mm256_loadu_ps(c + 8) : bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
            _mm256_storeu_ps(c, _mm256_add_ps(acc[i][0], a0));
            _mm256_storeu_ps(c + 8, _mm256_add_ps(acc[i][1], a1));
        } else {
            float tmp[A2_NR];
            _mm256_storeu_ps(tmp, acc[i][0]);
            _mm256_storeu_ps(tmp + 8, acc[i][1]);
            for (int j = 0; j < nvalid; j++) c[j] = tmp[j] + (accumulate ? c[j] : bias ? bias[j] : 0.0f);
        }
    }
}

typedef struct {
    float *out;
    const float *inp;
    const void *w;
    fp_dtype wt;
    const float *bias;
    int T, K, N;
} args2;

static void job(const args2 *a, int n0, int t0, int t1, float *panel, float *tmp) {
    int nvalid = MIN(A2_NR, a->N - n0), K = a->K;
    size_t rb = fp_dtype_row_bytes(a->wt, K);
    const float *bias = a->bias ? a->bias + n0 : NULL;
    for (int k0 = 0; k0 < K; k0 += A2_KC) {
        int kc = MIN(A2_KC, K - k0);
        pack(panel, tmp, a->w, a->wt, rb, n0, nvalid, k0, kc);
        for (int t = t0; t < t1; t += A2_MR) {
            const float *At = a->inp + (size_t)t * K + k0;
            float *C = a->out + (size_t)t * a->N + n0;
            switch (MIN(A2_MR, t1 - t)) {
            case 6: tile(6, At, K, panel, kc, C, a->N, nvalid, k0 > 0, bias); break;
            case 5: tile(5, At, K, panel, kc, C, a->N, nvalid, k0 > 0, bias); break;
            case 4: tile(4, At, K, panel, kc, C, a->N, nvalid, k0 > 0, bias); break;
            case 3: tile(3, At, K, panel, kc, C, a->N, nvalid, k0 > 0, bias); break;
            case 2: tile(2, At, K, panel, kc, C, a->N, nvalid, k0 > 0, bias); break;
            default: tile(1, At, K, panel, kc, C, a->N, nvalid, k0 > 0, bias); break;
            }
        }
    }
}

int fp_matmul_avx2(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias, int T, int K, int N) {
    size_t per_thread = (size_t)A2_KC * A2_NR * 4 + (size_t)A2_KC * 4;
    int nth = omp_get_max_threads();
    if (nth < 1) nth = 1;
    uint8_t *scratch = fp_matmul_scratch((size_t)nth * per_thread);
    if (!scratch) return -1;
    args2 a = {out, inp, w, wt, bias, T, K, N};
    int npanels = (N + A2_NR - 1) / A2_NR;
    int tb = 1;
    while (npanels * tb < 4 * nth && T / (tb * 2) >= 4 * A2_MR) tb *= 2;
    if ((T + tb - 1) / tb > 256) tb = (T + 255) / 256; /* activation blocks stay in L2 across panels */
    int rows = (T + tb - 1) / tb;
    rows = (rows + A2_MR - 1) / A2_MR * A2_MR;
    int njobs = npanels * tb;
#pragma omp parallel num_threads(nth)
    {
        float *panel = (float *)(scratch + (size_t)omp_get_thread_num() * per_thread);
        float *tmp = panel + (size_t)A2_KC * A2_NR;
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < njobs; j++) {
            int t0 = MIN(T, (j / npanels) * rows), t1 = MIN(T, t0 + rows); /* block-major order */
            if (t0 < t1) job(&a, (j % npanels) * A2_NR, t0, t1, panel, tmp);
        }
    }
    return 0;
}
