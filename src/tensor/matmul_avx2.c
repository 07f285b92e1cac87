/* AVX2+FMA GEMM kernel for fp_matmul_forward (all weight dtypes), for CPUs without AVX-512.
 * Compiled with -mavx2 -mfma -mf16c.  Same scheme as matmul_avx512.c: jobs = (panel of 16 weight rows) x
 * (block of T rows) over OpenMP; each job walks K in chunks of KC, converts the chunk of its 16 weight
 * rows to f32 into a per-thread panel [KC][16], and runs a 6 x 16 register tile (12 ymm accumulators)
 * over its rows.  Activations stay f32 (no rounding): results match the reference up to summation order.
 * Up to FP_GEMV_MAX_T rows a GEMV-style kernel reads the weight rows directly instead. */
#include "tensor/kernels.h"
#include "tensor/swiglu16.h"
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
    case FP_Q8_0: /* k0 and kc are multiples of 32 here */
        for (const uint8_t *b = r + (size_t)(k0 / 32) * 34; k < kc; k += 32, b += 34) {
            uint16_t h;
            memcpy(&h, b, 2);
            __m256 d = _mm256_set1_ps(_cvtsh_ss(h));
            for (int j = 0; j < 4; j++) {
                __m128i q = _mm_loadl_epi64((const __m128i *)(b + 2 + 8 * j));
                _mm256_storeu_ps(dst + k + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
            }
        }
        return;
    case FP_Q4_0: /* element j = (qs[j] & 15) - 8, element j+16 = (qs[j] >> 4) - 8 */
        for (const uint8_t *b = r + (size_t)(k0 / 32) * 18; k < kc; k += 32, b += 18) {
            uint16_t h;
            memcpy(&h, b, 2);
            __m256 d = _mm256_set1_ps(_cvtsh_ss(h));
            __m256i eight = _mm256_set1_epi32(8), lo4 = _mm256_set1_epi32(15);
            for (int j = 0; j < 2; j++) {
                __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * j)));
                __m256i lo = _mm256_sub_epi32(_mm256_and_si256(q, lo4), eight);
                __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(q, 4), eight);
                _mm256_storeu_ps(dst + k + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
                _mm256_storeu_ps(dst + k + 16 + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
            }
        }
        return;
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

/* Columns [n0, n0 + A2_NR) (weight rows of w) for rows [t0, t1); C0: the output of row t0, column n0, rows
 * ldc floats apart (out itself, or a per-thread block for the SwiGLU pair). */
static void job(const args2 *a, const void *w, int n0, int t0, int t1, float *panel, float *tmp, float *C0,
                size_t ldc) {
    int nvalid = MIN(A2_NR, a->N - n0), K = a->K;
    size_t rb = fp_dtype_row_bytes(a->wt, K);
    const float *bias = a->bias ? a->bias + n0 : NULL;
    for (int k0 = 0; k0 < K; k0 += A2_KC) {
        int kc = MIN(A2_KC, K - k0);
        pack(panel, tmp, w, a->wt, rb, n0, nvalid, k0, kc);
        for (int t = t0; t < t1; t += A2_MR) {
            const float *At = a->inp + (size_t)t * K + k0;
            float *C = C0 + (size_t)(t - t0) * ldc;
            switch (MIN(A2_MR, t1 - t)) {
            case 6: tile(6, At, K, panel, kc, C, ldc, nvalid, k0 > 0, bias); break;
            case 5: tile(5, At, K, panel, kc, C, ldc, nvalid, k0 > 0, bias); break;
            case 4: tile(4, At, K, panel, kc, C, ldc, nvalid, k0 > 0, bias); break;
            case 3: tile(3, At, K, panel, kc, C, ldc, nvalid, k0 > 0, bias); break;
            case 2: tile(2, At, K, panel, kc, C, ldc, nvalid, k0 > 0, bias); break;
            default: tile(1, At, K, panel, kc, C, ldc, nvalid, k0 > 0, bias); break;
            }
        }
    }
}

/* T <= FP_GEMV_MAX_T: GEMV-style, no packing.  Each thread takes pairs of weight rows, widens 32 elements
 * of each at a time into a small f32 buffer and keeps T x 2 ymm dot products; bound by reading the weights. */
AI void gemv_rows(const int TT, const args2 *a, int n, int nr) {
    float tmp[2][32] __attribute__((aligned(32)));
    __m256 acc[FP_GEMV_MAX_T][2];
    float tail[FP_GEMV_MAX_T][2] = {{0}};
    size_t rb = fp_dtype_row_bytes(a->wt, a->K);
    int K = a->K;
    for (int t = 0; t < TT; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int k0 = 0; k0 < K; k0 += 32) {
        int kc = MIN(32, K - k0);
        for (int r = 0; r < 2; r++) {
            if (r < nr) row_seg_f32(tmp[r], a->w, a->wt, rb, n + r, k0, kc);
            else memset(tmp[r], 0, sizeof tmp[r]);
        }
        if (kc == 32) {
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m256 w0 = _mm256_load_ps(tmp[0] + 8 * j), w1 = _mm256_load_ps(tmp[1] + 8 * j);
#pragma GCC unroll 4
                for (int t = 0; t < TT; t++) {
                    __m256 x = _mm256_loadu_ps(a->inp + (size_t)t * K + k0 + 8 * j);
                    acc[t][0] = _mm256_fmadd_ps(x, w0, acc[t][0]);
                    acc[t][1] = _mm256_fmadd_ps(x, w1, acc[t][1]);
                }
            }
        } else {
            for (int t = 0; t < TT; t++)
                for (int k = 0; k < kc; k++) {
                    float x = a->inp[(size_t)t * K + k0 + k];
                    tail[t][0] += x * tmp[0][k];
                    tail[t][1] += x * tmp[1][k];
                }
        }
    }
    for (int t = 0; t < TT; t++)
        for (int r = 0; r < nr; r++) {
            float v[8];
            _mm256_storeu_ps(v, acc[t][r]);
            float sum = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
            a->out[(size_t)t * a->N + n + r] = sum + tail[t][r] + (a->bias ? a->bias[n + r] : 0.0f);
        }
}

static void gemv(const args2 *a) {
    int ngroups = (a->N + 1) / 2;
#pragma omp parallel for schedule(static) if ((long long)a->N * a->K > 65536)
    for (int g = 0; g < ngroups; g++) {
        int n = 2 * g, nr = MIN(2, a->N - n);
        switch (a->T) {
        case 1: gemv_rows(1, a, n, nr); break;
        case 2: gemv_rows(2, a, n, nr); break;
        case 3: gemv_rows(3, a, n, nr); break;
        default: gemv_rows(4, a, n, nr); break;
        }
    }
}

/* out rows (ldo floats apart) = silu(g) * u over the nvalid (<= 16) columns of `rows` rows of the [rows][16]
 * blocks cg, cu: fp_swiglu16, the code of fp_swiglu_forward at this level (and of fp_swiglu_forward_fast, which
 * has no AVX2 kernel of its own), a ragged group zero padded as there. */
static void swiglu_pair_store(float *out, size_t ldo, const float *cg, const float *cu, int rows, int nvalid) {
    for (int r = 0; r < rows; r++) {
        const float *g = cg + (size_t)r * A2_NR, *u = cu + (size_t)r * A2_NR;
        float *o = out + (size_t)r * ldo;
        if (nvalid == A2_NR) {
            fp_swiglu16(o, g, u);
            continue;
        }
        float gb[16] = {0}, ub[16] = {0}, ob[16];
        memcpy(gb, g, sizeof(float) * (size_t)nvalid);
        memcpy(ub, u, sizeof(float) * (size_t)nvalid);
        fp_swiglu16(ob, gb, ub);
        memcpy(o, ob, sizeof(float) * (size_t)nvalid);
    }
}

/* wu != NULL: the SwiGLU pair (fp_matmul_avx2_swiglu_pair): each job runs its columns of w (the gate) and of
 * wu into two per-thread [rows][16] blocks, the same panels, sums and order as two plain calls, then writes
 * silu(gate) * up to out. */
static int run(float *out, const float *inp, const void *w, const void *wu, fp_dtype wt, const float *bias, int T,
               int K, int N) {
    if (T <= FP_GEMV_MAX_T) {
        args2 g = {out, inp, w, wt, bias, T, K, N};
        gemv(&g);
        return 0;
    }
    int nth = omp_get_max_threads();
    if (nth < 1) nth = 1;
    int npanels = (N + A2_NR - 1) / A2_NR;
    int tb = 1;
    while (npanels * tb < 4 * nth && T / (tb * 2) >= 4 * A2_MR) tb *= 2;
    /* activation blocks stay in L2 across panels */
    if ((T + tb - 1) / tb > FP_AVX2_ACT_BLOCK_ROWS) tb = (T + FP_AVX2_ACT_BLOCK_ROWS - 1) / FP_AVX2_ACT_BLOCK_ROWS;
    int rows = (T + tb - 1) / tb;
    rows = (rows + A2_MR - 1) / A2_MR * A2_MR;
    size_t pair_floats = wu ? (size_t)rows * A2_NR : 0; /* each of the pair's two blocks */
    size_t per_thread = (size_t)A2_KC * A2_NR * 4 + (size_t)A2_KC * 4 + 2 * pair_floats * 4;
    uint8_t *scratch = fp_matmul_scratch((size_t)nth * per_thread);
    if (!scratch) return -1;
    args2 a = {out, inp, w, wt, bias, T, K, N};
    int njobs = npanels * tb;
#pragma omp parallel num_threads(nth)
    {
        float *panel = (float *)(scratch + (size_t)omp_get_thread_num() * per_thread);
        float *tmp = panel + (size_t)A2_KC * A2_NR;
        float *cg = tmp + A2_KC, *cu = cg + pair_floats;
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < njobs; j++) {
            int t0 = MIN(T, (j / npanels) * rows), t1 = MIN(T, t0 + rows); /* block-major order */
            int n0 = (j % npanels) * A2_NR;
            if (t0 >= t1) continue;
            if (!wu) {
                job(&a, w, n0, t0, t1, panel, tmp, out + (size_t)t0 * N + n0, (size_t)N);
                continue;
            }
            job(&a, w, n0, t0, t1, panel, tmp, cg, A2_NR);
            job(&a, wu, n0, t0, t1, panel, tmp, cu, A2_NR);
            swiglu_pair_store(out + (size_t)t0 * N + n0, (size_t)N, cg, cu, t1 - t0, MIN(A2_NR, N - n0));
        }
    }
    return 0;
}

int fp_matmul_avx2(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias, int T, int K, int N) {
    return run(out, inp, w, NULL, wt, bias, T, K, N);
}

int fp_matmul_avx2_swiglu_pair(float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt, int T, int K,
                               int N) {
    if (T <= FP_GEMV_MAX_T || K <= 0 || N <= 0 || ((wt == FP_Q8_0 || wt == FP_Q4_0) && K % 32)) return 1;
    return run(out, inp, wg, wu, wt, NULL, T, K, N);
}
