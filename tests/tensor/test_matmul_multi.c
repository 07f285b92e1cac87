/* fp_matmul_forward_multi: several GEMMs over the same activations (the model's q, k, v projections) in one
 * pass.  On AMX (fast precision) the activations are converted once and the segments' columns share the jobs;
 * each output must be bit for bit what fp_matmul_forward_ex gives for its segment alone at the same precision
 * (same tiles, same k order, same bias start), which test_matmul checks against a double-precision oracle.
 * Cases: segment layouts like Qwen2's q/k/v (896/128/128, 1536/256/256), small and ragged ones (a last
 * segment of 50 or 33 columns), a first segment not a multiple of 32 (falls back to one GEMM per segment),
 * one segment; T from 5 to 700 (padding rows, several row blocks); K 64 / 200 / 896 / 4864 (two k chunks);
 * BF16, Q8_0, Q4_0 and F32 weights; biases on all, some or none of the segments; 1 and 2 threads; exact and
 * fast precision; every kernel level this CPU has (ref and avx2 on the small cases). */
#include "harness.h"
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include <omp.h>
#include <stdint.h>

#include "random_weights.h"
#include "tiles_layout.h"

static int same_bits(float a, float b) { return !memcmp(&a, &b, sizeof a) || (isnan(a) && isnan(b)); }

static long long n_cases, n_onepass;

static int check(int level, int exact, fp_dtype wt, int T, int K, int nseg, const int *N, int bias_mask) {
    float *x = malloc(sizeof(float) * (size_t)T * K);
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand() * (i % 5 == 0 ? 3.0f : 1.0f);
    void *w[FP_MATMUL_MAX_SEGS];
    float *out[FP_MATMUL_MAX_SEGS], *ref[FP_MATMUL_MAX_SEGS], *bias[FP_MATMUL_MAX_SEGS];
    for (int s = 0; s < nseg; s++) {
        float *wf = malloc(sizeof(float) * (size_t)N[s] * K);
        w[s] = make_weights(wt, N[s], K, NULL, wf);
        free(wf);
        out[s] = malloc(sizeof(float) * (size_t)T * N[s]);
        ref[s] = malloc(sizeof(float) * (size_t)T * N[s]);
        for (size_t i = 0; i < (size_t)T * N[s]; i++) out[s][i] = NAN; /* every element must be written */
        bias[s] = NULL;
        if (bias_mask >> s & 1) {
            bias[s] = malloc(sizeof(float) * N[s]);
            for (int n = 0; n < N[s]; n++) bias[s][n] = frand();
        }
    }
    fp_kernel_force(level);
    int onepass = !exact && level >= FP_KERN_AVX512 && fp_cpu_bf16_kernel() == FP_BF16_AMX && T > FP_GEMV_MAX_T &&
                  wt != FP_F32 && wt != FP_F16;
    for (int s = 0; s + 1 < nseg; s++) onepass &= N[s] % 32 == 0;
    fp_matmul_forward_multi(exact, nseg, out, (const void *const *)w, (const float *const *)bias, N, wt, x, T, K);
    for (int s = 0; s < nseg; s++) fp_matmul_forward_ex(exact, ref[s], x, w[s], wt, bias[s], T, K, N[s]);
    fp_kernel_force(-1);
    int bad = 0;
    for (int s = 0; s < nseg; s++) {
        int nb = 0;
        for (size_t i = 0; i < (size_t)T * N[s]; i++)
            if (!same_bits(out[s][i], ref[s][i]) && nb++ < 2)
                fprintf(stderr, "  %s %s level %d T=%d K=%d segment %d/%d (N %d) [%zu,%zu]: %.9g, alone %.9g\n",
                        fp_dtype_name(wt), exact ? "exact" : "fast", level, T, K, s, nseg, N[s], i / N[s], i % N[s],
                        out[s][i], ref[s][i]);
        bad += nb;
    }
    CHECK_MSG(bad == 0, "%s %s level %d T=%d K=%d, %d segments: %d outputs differ from one GEMM per segment",
              fp_dtype_name(wt), exact ? "exact" : "fast", level, T, K, nseg, bad);
    n_cases++;
    n_onepass += onepass;
    for (int s = 0; s < nseg; s++) { free(w[s]); free(out[s]); free(ref[s]); free(bias[s]); }
    free(x);
    return bad;
}

static const int layouts[][5] = { /* nseg, N... */
    {3, 896, 128, 128}, {3, 64, 32, 50}, {2, 96, 33}, {3, 40, 64, 64}, {1, 100}, {3, 1536, 256, 256}, {4, 32, 32, 64, 17},
};
static const int TK[][2] = {{5, 64}, {33, 896}, {100, 200}, {512, 896}, {700, 64}, {64, 4864}, {17, 1536}};

static int run_level(int level) {
    if (fp_cpu_max_kernel() < level) {
        printf("  (CPU lacks %s)\n", fp_kernel_level_name(level));
        return TH_SKIP;
    }
    int nmax = omp_get_max_threads();
    long long c0 = n_cases, o0 = n_onepass;
    for (int nth = 1; nth <= 2; nth++) {
        omp_set_num_threads(nth);
        for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++)
            for (size_t t = 0; t < sizeof TK / sizeof TK[0]; t++) {
                int T = TK[t][0], K = TK[t][1], nseg = layouts[l][0];
                const int *N = layouts[l] + 1;
                double work = (double)T * K * (N[0] + (nseg > 1 ? N[1] : 0) + (nseg > 2 ? N[2] : 0));
                if (level < FP_KERN_AVX512 && work > 2e7) continue;
                if ((l + t + nth) % 2 && work > 1e8) continue; /* the largest cases at one thread count */
                int bias_mask = (int)((l + t) % 4) == 0 ? 0 : (int)((l + t) % 4) == 1 ? 15 : 5;
                for (int exact = 0; exact <= 1; exact++) {
                    check(level, exact, FP_BF16, T, K, nseg, N, bias_mask);
                    if ((int)(t % 2) == nth - 1 && K % 32 == 0)
                        check(level, exact, l % 2 ? FP_Q8_0 : FP_Q4_0, T, K, nseg, N, bias_mask);
                    if (t == 1 && nth == 1) check(level, exact, FP_F32, T, K, nseg, N, bias_mask);
                }
            }
    }
    omp_set_num_threads(nmax);
    printf("  level %s: %lld cases, %lld in one AMX pass\n", fp_kernel_level_name(level), n_cases - c0,
           n_onepass - o0);
    if (level == FP_KERN_AVX512 && fp_cpu_has_amx_bf16()) CHECK(n_onepass > o0);
    return 0;
}
static int test_level_ref(void) { return run_level(FP_KERN_REF); }
static int test_level_avx2(void) { return run_level(FP_KERN_AVX2); }
static int test_level_avx512(void) { return run_level(FP_KERN_AVX512); }

/* fp_rmsnorm_tiles (the fast MLP's and q/k/v's RMSNorm fused with the conversion of their input to bf16 AMX
 * tiles): every tile element is fp_f32_to_bf16 of what fp_rmsnorm_forward writes for it (the GEMMs round f32
 * input that way), zeros in the padding rows and k columns (the buffer starts as all-ones NaN patterns); and
 * the GEMMs that take those tiles (fp_matmul_avx512_multi, fp_matmul_avx512_swiglu_tiles) give bit for bit
 * what they give from the f32 rows.  T 1..700 (ragged row groups), K 64 / 100 (ragged k tile) / 896 / 4864,
 * 1 and 2 threads, BF16 and Q8_0 weights. */
static int test_norm_tiles(void) {
    if (fp_cpu_max_kernel() < FP_KERN_AVX512 || !fp_cpu_has_amx_bf16()) {
        printf("  (no AMX-BF16)\n");
        return TH_SKIP;
    }
    static const int tk[][2] = {{1, 64}, {5, 64}, {17, 100}, {33, 896}, {100, 96}, {700, 896}, {40, 4864}, {6, 33}};
    int nmax = omp_get_max_threads(), ncases = 0, ngemm = 0;
    for (int nth = 1; nth <= 2; nth++) {
        omp_set_num_threads(nth);
        for (size_t c = 0; c < sizeof tk / sizeof tk[0]; c++) {
            int T = tk[c][0], K = tk[c][1];
            size_t TK = (size_t)T * K, tb = fp_matmul_tiles_bytes(T, K);
            float *x = malloc(sizeof(float) * TK), *g = malloc(sizeof(float) * K), *xn = malloc(sizeof(float) * TK);
            uint16_t *tiles = aligned_alloc(64, (tb + 63) & ~(size_t)63);
            for (size_t i = 0; i < TK; i++) x[i] = frand() * (i % 9 == 0 ? 20.0f : 1.0f);
            for (int k = 0; k < K; k++) g[k] = 1.0f + 0.5f * frand();
            fp_rmsnorm_forward(xn, x, g, 1e-6f, T, K);
            memset(tiles, 0xff, tb);
            CHECK(fp_rmsnorm_tiles(tiles, x, g, 1e-6f, T, K) == 0);
            char label[64];
            snprintf(label, sizeof label, "T=%d K=%d", T, K);
            int bad = tiles_mismatches(tiles, xn, T, K, label);
            CHECK_MSG(bad == 0, "T=%d K=%d, %d thread(s): %d tile elements differ from rounded fp_rmsnorm_forward",
                      T, K, nth, bad);
            ncases++;
            for (int q = 0; q <= 1 && T > FP_GEMV_MAX_T; q++) { /* the GEMMs from these tiles */
                fp_dtype wt = q ? FP_Q8_0 : FP_BF16;
                if (q && K % 32) continue;
                int N[3] = {64, 32, 50}, D = 96;
                void *w[3];
                float *o1[3], *o2[3];
                for (int s = 0; s < 3; s++) {
                    float *wf = malloc(sizeof(float) * (size_t)N[s] * K);
                    w[s] = make_weights(wt, N[s], K, NULL, wf);
                    free(wf);
                    o1[s] = malloc(sizeof(float) * (size_t)T * N[s]);
                    o2[s] = malloc(sizeof(float) * (size_t)T * N[s]);
                }
                CHECK(fp_matmul_avx512_multi(3, o1, (const void *const *)w, NULL, N, wt, xn, NULL, T, K) == 0);
                CHECK(fp_matmul_avx512_multi(3, o2, (const void *const *)w, NULL, N, wt, NULL, tiles, T, K) == 0);
                for (int s = 0; s < 3; s++)
                    CHECK_MSG(!memcmp(o1[s], o2[s], sizeof(float) * (size_t)T * N[s]),
                              "%s T=%d K=%d: q/k/v segment %d from tiles differs", fp_dtype_name(wt), T, K, s);
                if (K <= FP_AMX_SWIGLU_MAX_K) {
                    float *wf = malloc(sizeof(float) * (size_t)D * K);
                    void *wg = make_weights(wt, D, K, NULL, wf), *wu = make_weights(wt, D, K, NULL, wf);
                    size_t ob = fp_matmul_tiles_bytes(T, D);
                    uint16_t *t1 = aligned_alloc(64, (ob + 63) & ~(size_t)63), *t2 = aligned_alloc(64, (ob + 63) & ~(size_t)63);
                    CHECK(fp_matmul_avx512_swiglu_tiles(t1, xn, NULL, wg, wu, wt, T, K, D) == 0);
                    CHECK(fp_matmul_avx512_swiglu_tiles(t2, NULL, tiles, wg, wu, wt, T, K, D) == 0);
                    CHECK_MSG(!memcmp(t1, t2, ob), "%s T=%d K=%d: SwiGLU from tiles differs", fp_dtype_name(wt), T, K);
                    free(wf); free(wg); free(wu); free(t1); free(t2);
                }
                for (int s = 0; s < 3; s++) { free(w[s]); free(o1[s]); free(o2[s]); }
                ngemm++;
            }
            free(x); free(g); free(xn); free(tiles);
        }
    }
    omp_set_num_threads(nmax);
    printf("  %d norm-to-tiles cases, %d with the GEMMs from tiles\n", ncases, ngemm);
    return 0;
}

int main(void) {
    RUN(test_level_ref);
    RUN(test_level_avx2);
    RUN(test_level_avx512);
    RUN(test_norm_tiles);
    return th_finish();
}
