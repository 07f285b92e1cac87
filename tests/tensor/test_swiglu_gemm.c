/* fp_matmul_swiglu_forward_ex: out[T,N] = silu(x Wg^T) * (x Wu^T), fused on AMX (fast precision, BF16 /
 * Q8_0 / Q4_0 weights, T > 4, K <= 4096), the unfused gate GEMM + up GEMM + fp_swiglu_forward otherwise
 * (fp_swiglu_forward_fast in fast precision: the fused kernel's SwiGLU).
 *
 * Two checks per case, at every kernel level this CPU has (ref, avx2, avx512), exact and fast precision,
 * 1 and 2 OpenMP threads:
 *  1. Bit for bit against the unfused computation (fp_matmul_forward_ex twice, fp_swiglu_forward(_fast)) at the same
 *     level and precision, every element.  The fallbacks are those very calls; the fused AMX kernel runs the
 *     unfused AMX GEMM's tile loop (same tiles, same k order, one k chunk for K <= 4096, C from zero) and
 *     runs fp_swiglu_forward_fast's vector code (tensor/swiglu16_fast.h) on the tiles, so it must agree exactly too.
 *  2. Against a double-precision oracle: G, U = exact sums over the activations and weights as the path
 *     sees them (bf16-rounded activations on the AMX / vdpbf16ps paths, with bf16-rounded dequantised
 *     weights for Q8_0/Q4_0 on AMX; int8 blocks on the VNNI path; f32 otherwise), then R = silu(G) U in
 *     double.  With S_g = sum_k |x~_k w~_k| and u = 2^-24, the GEMMs are within
 *     e_g = 8 sqrt(K) u S_g + 1e-30 (test_matmul's emulation bound: random-walk growth of the f32 summation
 *     error, 8 sigma) and e_u likewise.  silu(g) = g sigmoid(g) has |silu'| <= 1.0999, so
 *       |silu(g) u - silu(G) U| <= 1.1 e_g (|U| + e_u) + |silu(G)| e_u,
 *     and the f32 SwiGLU formula g / (1 + exp(-g)) * u adds at most ~5 ulp relative (exp <= 2 ulp, then
 *     three roundings; 1 + e can only shrink the relative error of e), the fast-precision one at most 12 u
 *     (test_ops): 16 u |R|.  Where exp(-g) overflows (g < -88.72) the exact formula gives -0, the fast one
 *     (g < -87.33) at most 2^-125 |g U|, while |R| < 3e-37 |U|: + 1e-35 |U| + 1e-30 (|g| <= ~400 here).
 *     That bound is checked on every element of small cases (T*K*N <= 5e7) and, for larger ones, of about
 *     a dozen to twenty rows (the first and last two, 15/16, 32-row block edges below 100, 8 spread over T),
 *     all columns.
 * Shapes: T in {5, 17, 31, 32, 33, 100, 512, 700}, K in {64, 96, 896, 1536, 3584}, N in {16, 48, 100, 896,
 * 4864} combined so that every value meets several others (the full cross product would take minutes);
 * ref and avx2 levels (scalar / AVX2 GEMMs) only on the shapes with T*K*N <= 2e7.  Plus gate weights scaled
 * so that |g| reaches a few hundred (silu saturating to g and to -0, exp overflow), and the model's shapes. */
#include "harness.h"
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include <omp.h>
#include <stdint.h>

#include "random_weights.h"
#include "tiles_layout.h"

enum { NUM_F32, NUM_BF16, NUM_Q8 };

/* Activations as the GEMM path sees them (Q8: the integers, scaled by qd[t][b] in the oracle). */
static void path_activations(int num, const float *x, double *xt, float *qd, int T, int K) {
    for (int t = 0; t < T; t++) {
        const float *r = x + (size_t)t * K;
        double *o = xt + (size_t)t * K;
        if (num == NUM_F32)
            for (int k = 0; k < K; k++) o[k] = r[k];
        else if (num == NUM_BF16)
            for (int k = 0; k < K; k++) o[k] = fp_bf16_to_f32(fp_f32_to_bf16(r[k]));
        else
            for (int b = 0; b < K / 32; b++) {
                float q[32], d = emulate_q8_block(r + 32 * b, q);
                for (int j = 0; j < 32; j++) o[32 * b + j] = (double)q[j] * d;
                qd[(size_t)t * (K / 32) + b] = d;
            }
    }
}

static int same_bits(float a, float b) { return !memcmp(&a, &b, sizeof a) || (isnan(a) && isnan(b)); }

static long long n_cases, n_fused, n_sat_pos, n_sat_neg;

/* One case at the current forced level.  gscale > 0: gate row n scaled by 1 + gscale * (n % 7). */
static int check_case(int level, int exact, fp_dtype wt, int T, int K, int N, float gscale) {
    size_t TK = (size_t)T * K, NK = (size_t)N * K, TN = (size_t)T * N;
    float *x = malloc(sizeof(float) * TK), *wgf = malloc(sizeof(float) * NK), *wuf = malloc(sizeof(float) * NK);
    float *sc = malloc(sizeof(float) * (size_t)N), *qd = malloc(sizeof(float) * ((size_t)T * (K / 32) + 1));
    float *out = malloc(sizeof(float) * TN), *g = malloc(sizeof(float) * TN), *u = malloc(sizeof(float) * TN);
    float *ref = malloc(sizeof(float) * TN);
    double *xt = malloc(sizeof(double) * TK);
    for (size_t i = 0; i < TK; i++) x[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
    for (int n = 0; n < N; n++) sc[n] = 1.0f + gscale * (float)(n % 7);
    void *wg = make_weights(wt, N, K, gscale > 0 ? sc : NULL, wgf), *wu = make_weights(wt, N, K, NULL, wuf);
    for (size_t i = 0; i < TN; i++) out[i] = NAN; /* every element must be written */

    fp_kernel_force(level);
    int fused = fp_matmul_swiglu_fused(exact, wt, T, K, N);
    CHECK_OK(fp_matmul_swiglu_forward_ex(exact, out, x, wg, wu, wt, T, K, N));
    /* the unfused computation, as the model ran it */
    fp_matmul_forward_ex(exact, g, x, wg, wt, NULL, T, K, N);
    fp_matmul_forward_ex(exact, u, x, wu, wt, NULL, T, K, N);
    if (exact) fp_swiglu_forward(ref, g, u, T, N);
    else fp_swiglu_forward_fast(ref, g, u, T, N);
    const char *kname = exact ? (level >= FP_KERN_AVX512 && T > FP_GEMV_MAX_T ? "avx512-f32fma"
                                 : fp_matmul_kernel_name_shape(level, wt, T))
                              : fp_matmul_kernel_name_shape(level, wt, T);
    fp_kernel_force(-1);
    int num = NUM_F32;
    if (!exact && (strstr(kname, "amx") || strstr(kname, "bf16dp"))) num = NUM_BF16;
    else if (!exact && strstr(kname, "vnni")) num = NUM_Q8;
    int wround = !exact && strstr(kname, "amx-bf16-q") != NULL; /* Q weights dequantised to bf16 by AMX */
    if (wround)
        for (size_t i = 0; i < NK; i++) {
            wgf[i] = fp_bf16_to_f32(fp_f32_to_bf16(wgf[i]));
            wuf[i] = fp_bf16_to_f32(fp_f32_to_bf16(wuf[i]));
        }
    path_activations(num, x, xt, qd, T, K);

    int bad = 0, nbits = 0;
    for (size_t i = 0; i < TN; i++)
        if (!same_bits(out[i], ref[i]) && nbits++ < 3)
            fprintf(stderr, "  %s%s %s T=%d K=%d N=%d [%zu,%zu]: fused %.9g unfused %.9g\n", kname,
                    fused ? "(fused)" : "", exact ? "exact" : "fast", T, K, N, i / N, i % N, out[i], ref[i]);
    const double uu = 1.0 / 16777216.0;
    for (int t = 0; t < T; t++) {
        int take = (double)T * K * N <= 5e7 || t < 2 || t >= T - 2 || t == 15 || t == 16 ||
                   (t < 100 && (t % 32 == 31 || t % 32 == 0)) || (T >= 8 && t % (T / 8) == 3);
        if (!take) continue;
        const double *xr = xt + (size_t)t * K;
        for (int n = 0; n < N; n++) {
            const float *a = wgf + (size_t)n * K, *b = wuf + (size_t)n * K;
            double G = 0, U = 0, Sg = 0, Su = 0;
            for (int k = 0; k < K; k++) {
                double pg = xr[k] * a[k], pu = xr[k] * b[k];
                G += pg;
                U += pu;
                Sg += fabs(pg);
                Su += fabs(pu);
            }
            double eg = 8.0 * sqrt((double)K) * uu * Sg + 1e-30, eu = 8.0 * sqrt((double)K) * uu * Su + 1e-30;
            double sG = G / (1.0 + exp(-G)), R = sG * U;
            double tol = 1.1 * eg * (fabs(U) + eu) + fabs(sG) * eu + 16.0 * uu * fabs(R) + 1e-35 * fabs(U) + 1e-30;
            double o = out[(size_t)t * N + n];
            if (G > 88.0) n_sat_pos++;
            if (G < -88.0) n_sat_neg++;
            if (!(fabs(o - R) <= tol) && bad++ < 3)
                fprintf(stderr, "  %s%s %s %s T=%d K=%d N=%d [%d,%d]: got %.9g exact %.9g (g %.6g u %.6g) tol %.3g\n",
                        kname, fused ? "(fused)" : "", exact ? "exact" : "fast", fp_dtype_name(wt), T, K, N, t, n, o,
                        R, G, U, tol);
        }
    }
    CHECK_MSG(nbits == 0, "%s%s %s %s T=%d K=%d N=%d: %d outputs differ from the unfused computation", kname,
              fused ? "(fused)" : "", exact ? "exact" : "fast", fp_dtype_name(wt), T, K, N, nbits);
    CHECK_MSG(bad == 0, "%s%s %s %s T=%d K=%d N=%d: %d outputs outside the oracle bound", kname,
              fused ? "(fused)" : "", exact ? "exact" : "fast", fp_dtype_name(wt), T, K, N, bad);
    n_cases++;
    n_fused += fused;
    free(x); free(wgf); free(wuf); free(sc); free(qd); free(out); free(g); free(u); free(ref); free(xt);
    free(wg); free(wu);
    return bad + nbits;
}

static const int shapes[][3] = { /* T, K, N */
    {5, 64, 16},     {17, 96, 48},    {31, 896, 100},   {32, 64, 896},   {33, 1536, 48},  {100, 896, 4864},
    {512, 896, 4864}, {700, 3584, 100}, {512, 1536, 896}, {33, 3584, 4864}, {700, 96, 896},  {17, 3584, 16},
    {100, 64, 100},  {5, 1536, 4864}, {32, 896, 16},    {512, 64, 48},   {700, 896, 896}, {31, 3584, 896},
    {100, 1536, 100}, {512, 96, 16},  {17, 896, 4864},  {32, 3584, 48},  {33, 96, 100},   {5, 3584, 896},
};

static int levels_run(int level) {
    if (fp_cpu_max_kernel() < level) {
        printf("  (CPU lacks %s)\n", fp_kernel_level_name(level));
        return TH_SKIP;
    }
    int nmax = omp_get_max_threads();
    long long f0 = n_fused, c0 = n_cases;
    for (int nth = 1; nth <= 2; nth++) {
        omp_set_num_threads(nth);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            if (level < FP_KERN_AVX512 && (double)T * K * N > 2e7) continue;
            for (int exact = 0; exact <= 1; exact++) {
                check_case(level, exact, FP_BF16, T, K, N, 0.0f);
                /* the quantised types (AMX: dequantised to bf16 while packing) and f32 (always unfused) on
                 * a third of the shapes each, at one thread count */
                if ((int)(s % 3) == nth - 1) check_case(level, exact, s % 2 ? FP_Q8_0 : FP_Q4_0, T, K, N, 0.0f);
                if (s % 3 == 2 && nth == 1) check_case(level, exact, FP_F32, T, K, N, 0.0f);
            }
        }
    }
    omp_set_num_threads(nmax);
    printf("  level %s: %lld cases, %lld through the fused AMX kernel\n", fp_kernel_level_name(level),
           n_cases - c0, n_fused - f0);
    if (level == FP_KERN_AVX512 && fp_cpu_has_amx_bf16()) CHECK(n_fused > f0);
    return 0;
}

static int test_level_ref(void) { return levels_run(FP_KERN_REF); }
static int test_level_avx2(void) { return levels_run(FP_KERN_AVX2); }
static int test_level_avx512(void) { return levels_run(FP_KERN_AVX512); }

/* Gate weights scaled up to |g| of a few hundred: silu(g) -> g for large g, -> -0 (exp(-g) = inf) below
 * -88.72, and everything in between; fused and unfused, every level. */
static int test_saturation(void) {
    long long p0 = n_sat_pos, q0 = n_sat_neg;
    for (int level = FP_KERN_REF; level <= fp_cpu_max_kernel(); level++)
        for (int exact = 0; exact <= 1; exact++) {
            check_case(level, exact, FP_BF16, 37, 896, 100, 12.0f);
            check_case(level, exact, FP_F32, 9, 64, 48, 60.0f);
        }
    if (fp_cpu_max_kernel() >= FP_KERN_AVX512) check_case(FP_KERN_AVX512, 0, FP_BF16, 100, 1536, 896, 20.0f);
    printf("  outputs with g > 88: %lld, g < -88: %lld\n", n_sat_pos - p0, n_sat_neg - q0);
    CHECK(n_sat_pos - p0 > 100 && n_sat_neg - q0 > 100);
    return 0;
}

/* Odd corners: K not a multiple of 32 (BF16 pads k with zeros), K at the single-chunk limit and just above
 * (unfused there), T = 4 (GEMV, unfused) and 6, N = 1, N = 17. */
static int test_edges(void) {
    static const int e[][3] = {{6, 33, 17}, {4, 896, 100}, {9, 4096, 40}, {9, 4100, 40}, {70, 200, 1}, {40, 31, 130},
                               {64, 4064, 33}};
    for (size_t s = 0; s < sizeof e / sizeof e[0]; s++)
        for (int exact = 0; exact <= 1; exact++) check_case(fp_cpu_max_kernel(), exact, FP_BF16, e[s][0], e[s][1], e[s][2], 0.0f);
    if (fp_cpu_max_kernel() >= FP_KERN_AVX512 && fp_cpu_has_amx_bf16()) {
        fp_kernel_force(FP_KERN_AVX512);
        CHECK(fp_matmul_swiglu_fused(0, FP_BF16, 9, 4096, 40) == 1);
        CHECK(fp_matmul_swiglu_fused(0, FP_BF16, 9, 4100, 40) == 0);
        CHECK(fp_matmul_swiglu_fused(0, FP_BF16, 4, 896, 40) == 0);
        CHECK(fp_matmul_swiglu_fused(1, FP_BF16, 9, 896, 40) == 0);
        CHECK(fp_matmul_swiglu_fused(0, FP_F16, 9, 896, 40) == 0);
        CHECK(fp_matmul_swiglu_fused(0, FP_Q8_0, 9, 896, 40) == 1);
        fp_kernel_force(FP_KERN_AVX2);
        CHECK(fp_matmul_swiglu_fused(0, FP_BF16, 9, 896, 40) == 0);
        fp_kernel_force(-1);
    }
    /* the caller's scratch gives the same result as the allocating entry (unfused path: exact) */
    int T = 20, K = 96, N = 50;
    float *x = malloc(sizeof(float) * T * K), *wf = malloc(sizeof(float) * N * K), *o1 = malloc(sizeof(float) * T * N);
    float *o2 = malloc(sizeof(float) * T * N), *scr = malloc(sizeof(float) * T * N);
    for (int i = 0; i < T * K; i++) x[i] = frand();
    void *wg = make_weights(FP_BF16, N, K, NULL, wf), *wu = make_weights(FP_BF16, N, K, NULL, wf);
    for (int exact = 0; exact <= 1; exact++) {
        CHECK_OK(fp_matmul_swiglu_forward_ex(exact, o1, x, wg, wu, FP_BF16, T, K, N));
        CHECK_OK(fp_matmul_swiglu_forward_buf(exact, o2, x, wg, wu, FP_BF16, T, K, N, scr));
        CHECK(!memcmp(o1, o2, sizeof(float) * T * N));
    }
    free(x); free(wf); free(o1); free(o2); free(scr); free(wg); free(wu);
    return 0;
}


/* The bf16-tile hand-off of the fast MLP (fp_matmul_avx512_swiglu_tiles -> fp_matmul_avx512_tiles): the tiles
 * hold, at the layout kernels.h states, exactly the f32 SwiGLU output of fp_matmul_swiglu_forward_ex rounded
 * to nearest even (fp_f32_to_bf16), zeros in the padding (the buffer starts as all-ones NaN patterns), and the
 * down GEMM from them gives bit for bit what fp_matmul_forward_ex (fast) gives from the f32 output, with and
 * without a bias; 1 and 2 threads; N and T with and without padding; BF16 / Q8_0 / Q4_0 weights. */
static int test_tiles_handoff(void) {
    if (fp_cpu_max_kernel() < FP_KERN_AVX512 || !fp_cpu_has_amx_bf16()) {
        printf("  (no AMX-BF16)\n");
        return TH_SKIP;
    }
    static const int sh[][4] = { /* T, K, N, D */
        {5, 64, 48, 40},   {17, 96, 100, 33},  {33, 896, 4864, 896}, {100, 200, 40, 17},  {512, 896, 4864, 896},
        {64, 128, 50, 64}, {31, 4096, 64, 100}, {6, 33, 17, 5},       {700, 96, 896, 96}, {40, 1536, 8960, 1536},
    };
    static const fp_dtype types[] = {FP_BF16, FP_Q8_0, FP_Q4_0};
    int nmax = omp_get_max_threads(), ncases = 0;
    fp_kernel_force(FP_KERN_AVX512);
    for (int nth = 1; nth <= 2; nth++) {
        omp_set_num_threads(nth);
        for (size_t s = 0; s < sizeof sh / sizeof sh[0]; s++)
            for (size_t ty = 0; ty < 3; ty++) {
                int T = sh[s][0], K = sh[s][1], N = sh[s][2], D = sh[s][3];
                fp_dtype wt = types[ty];
                int q = wt != FP_BF16;
                if (q && (K % 32 || N % 32)) continue;
                if ((ty + s + nth) % 2 && T * (double)K * N > 1e8) continue; /* the big shapes once per type */
                float *x = malloc(sizeof(float) * T * K), *wf = malloc(sizeof(float) * (size_t)N * K);
                float *wdf = malloc(sizeof(float) * (size_t)D * N), *bias = malloc(sizeof(float) * D);
                float *h = malloc(sizeof(float) * (size_t)T * N), *ref = malloc(sizeof(float) * (size_t)T * D);
                float *got = malloc(sizeof(float) * (size_t)T * D);
                size_t tb = fp_matmul_tiles_bytes(T, N);
                uint16_t *tiles = aligned_alloc(64, (tb + 63) & ~(size_t)63);
                for (int i = 0; i < T * K; i++) x[i] = frand();
                for (int i = 0; i < D; i++) bias[i] = frand();
                void *wg = make_weights(wt, N, K, NULL, wf), *wu = make_weights(wt, N, K, NULL, wf);
                void *wd = make_weights(wt, D, N, NULL, wdf);
                CHECK(fp_matmul_swiglu_tiles_ok(0, wt, wt, T, K, N) == 1);
                memset(tiles, 0xff, tb);
                CHECK(fp_matmul_avx512_swiglu_tiles(tiles, x, NULL, wg, wu, wt, T, K, N) == 0);
                CHECK_OK(fp_matmul_swiglu_forward_ex(0, h, x, wg, wu, wt, T, K, N));
                char label[96];
                snprintf(label, sizeof label, "%s T=%d K=%d N=%d", fp_dtype_name(wt), T, K, N);
                int bad = tiles_mismatches(tiles, h, T, N, label);
                CHECK_MSG(bad == 0, "%s T=%d K=%d N=%d: %d tile elements wrong", fp_dtype_name(wt), T, K, N, bad);
                for (int wb = 0; wb <= 1; wb++) {
                    fp_matmul_forward_ex(0, ref, h, wd, wt, wb ? bias : NULL, T, N, D);
                    for (size_t i = 0; i < (size_t)T * D; i++) got[i] = NAN;
                    CHECK(fp_matmul_avx512_tiles(got, tiles, wd, wt, wb ? bias : NULL, T, N, D) == 0);
                    int nb = 0;
                    for (size_t i = 0; i < (size_t)T * D; i++) nb += !same_bits(got[i], ref[i]);
                    CHECK_MSG(nb == 0, "%s T=%d N=%d D=%d bias %d: %d down outputs differ from the f32 path",
                              fp_dtype_name(wt), T, N, D, wb, nb);
                }
                ncases++;
                free(x); free(wf); free(wdf); free(bias); free(h); free(ref); free(got); free(tiles);
                free(wg); free(wu); free(wd);
            }
    }
    /* not handled: exact precision, T <= 4, F32 weights, Q8_0 down weights with N % 32 != 0 */
    CHECK(fp_matmul_swiglu_tiles_ok(1, FP_BF16, FP_BF16, 64, 896, 4864) == 0);
    CHECK(fp_matmul_swiglu_tiles_ok(0, FP_BF16, FP_BF16, 4, 896, 4864) == 0);
    CHECK(fp_matmul_swiglu_tiles_ok(0, FP_F32, FP_BF16, 64, 896, 4864) == 0);
    CHECK(fp_matmul_swiglu_tiles_ok(0, FP_BF16, FP_Q8_0, 64, 896, 100) == 0);
    fp_kernel_force(-1);
    omp_set_num_threads(nmax);
    printf("  %d hand-off cases\n", ncases);
    return 0;
}

/* Inputs of one SwiGLU pair case: activations and random gate / up weights in dtype wt. */
typedef struct {
    float *x, *wf;
    void *wg, *wu;
} pair_inputs;
static void pair_inputs_make(pair_inputs *p, fp_dtype wt, int T, int K, int N) {
    p->x = malloc(sizeof(float) * T * K);
    p->wf = malloc(sizeof(float) * (size_t)N * K);
    for (int i = 0; i < T * K; i++) p->x[i] = frand() * (i % 5 == 0 ? 3.0f : 1.0f);
    p->wg = make_weights(wt, N, K, NULL, p->wf);
    p->wu = make_weights(wt, N, K, NULL, p->wf);
}
static void pair_inputs_free(pair_inputs *p) { free(p->x); free(p->wf); free(p->wg); free(p->wu); }

/* The pair of the AVX2 kernel (avx2) or of the AVX-512 kernel fp_matmul_avx512(..., bk, vnni) picks against
 * that kernel's two GEMMs followed by fp_swiglu_forward (swiglu_exact) or fp_swiglu_forward_fast at the forced
 * level: every element bit for bit (out starts as NaN: every element must be written).  Returns 1 when
 * compared, 0 when the pair declined (T <= FP_GEMV_MAX_T, as it must). */
static int pair_compare(int avx2, int bk, int vnni, int swiglu_exact, fp_dtype wt, int T, int K, int N,
                        const pair_inputs *p) {
    size_t TN = (size_t)T * N;
    float *g = malloc(sizeof(float) * TN), *u = malloc(sizeof(float) * TN), *ref = malloc(sizeof(float) * TN);
    float *out = malloc(sizeof(float) * TN);
    for (size_t i = 0; i < TN; i++) out[i] = NAN;
    const char *kn = avx2 ? "avx2-f32fma" : fp_matmul_avx512_name(wt, bk, vnni);
    CHECK((avx2 ? fp_matmul_avx2(g, p->x, p->wg, wt, NULL, T, K, N) : fp_matmul_avx512(g, p->x, p->wg, wt, NULL, T, K, N, bk, vnni)) == 0);
    CHECK((avx2 ? fp_matmul_avx2(u, p->x, p->wu, wt, NULL, T, K, N) : fp_matmul_avx512(u, p->x, p->wu, wt, NULL, T, K, N, bk, vnni)) == 0);
    if (swiglu_exact) fp_swiglu_forward(ref, g, u, T, N);
    else fp_swiglu_forward_fast(ref, g, u, T, N);
    int rc = avx2 ? fp_matmul_avx2_swiglu_pair(out, p->x, p->wg, p->wu, wt, T, K, N)
                  : fp_matmul_avx512_swiglu_pair(out, p->x, p->wg, p->wu, wt, T, K, N, bk, vnni, swiglu_exact);
    CHECK_MSG(rc == (T <= FP_GEMV_MAX_T ? 1 : 0), "pair %s %s T=%d: rc %d", kn, fp_dtype_name(wt), T, rc);
    int nbits = 0;
    for (size_t i = 0; i < TN && rc == 0; i++)
        if (!same_bits(out[i], ref[i]) && nbits++ < 3)
            fprintf(stderr, "  pair %s %s %s T=%d K=%d N=%d [%zu,%zu]: %.9g vs %.9g\n", kn, fp_dtype_name(wt),
                    swiglu_exact ? "exact" : "fast", T, K, N, i / N, i % N, out[i], ref[i]);
    CHECK_MSG(nbits == 0, "pair %s %s T=%d K=%d N=%d: %d outputs differ", kn, fp_dtype_name(wt), T, K, N, nbits);
    free(g); free(u); free(ref); free(out);
    return rc == 0;
}

/* The SwiGLU pair (fp_matmul_avx512_swiglu_pair) on every non-AMX AVX-512 kernel, forced (the model picks one
 * per CPU: f32 FMA for exact precision everywhere; VNNI, vdpbf16ps or f32 FMA in fast precision without AMX),
 * and the AVX2 kernel's (fp_matmul_avx2_swiglu_pair, on half of the cases), with pair_compare: F32 / F16 /
 * BF16 / Q8_0 / Q4_0 weights; T across the kernels' 6-row tiles and 256-row activation blocks (5, 6, 7, 31,
 * 257, 700), K with and without a ragged last chunk, N across the 16 / 32 / 64-column panels (1, 17, 64, 100,
 * 130); both SwiGLUs; 1 and 2 threads.  The accuracy of those GEMMs and SwiGLUs themselves: test_matmul,
 * test_ops and the oracle of the levels above. */
static int test_pair_kernels(void) {
    if (fp_cpu_max_kernel() < FP_KERN_AVX512) {
        printf("  (CPU lacks avx512)\n");
        return TH_SKIP;
    }
    static const int sh[][3] = {{5, 64, 17},   {6, 96, 64},    {7, 896, 100}, {31, 32, 130},  {257, 896, 100},
                                {700, 96, 1}, {257, 160, 130}, {64, 4864, 64}, {33, 1536, 17}};
    static const fp_dtype types[] = {FP_F32, FP_F16, FP_BF16, FP_Q8_0, FP_Q4_0};
    static const int kinds[][2] = {{FP_BF16_FMA, 0}, {FP_BF16_DP, 1}}; /* bf16_kernel, use_vnni */
    int nmax = omp_get_max_threads(), ncases = 0, nbf16dp = 0, nvnni = 0, navx2 = 0;
    for (int nth = 1; nth <= 2; nth++) {
        omp_set_num_threads(nth);
        for (size_t s = 0; s < sizeof sh / sizeof sh[0]; s++)
            for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
                int T = sh[s][0], K = sh[s][1], N = sh[s][2];
                fp_dtype wt = types[ty];
                if ((wt == FP_Q8_0 || wt == FP_Q4_0) && K % 32) continue;
                pair_inputs in;
                pair_inputs_make(&in, wt, T, K, N);
                fp_kernel_force(FP_KERN_AVX512); /* the level of fp_swiglu_forward(_fast) */
                for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
                    for (int sx = 0; sx <= 1; sx++) {
                        int bk = kinds[k][0], vnni = kinds[k][1];
                        if (bk == FP_BF16_DP && !fp_cpu_has_avx512bf16()) bk = FP_BF16_FMA;
                        if (vnni && !fp_cpu_has_avx512vnni()) vnni = 0;
                        if (!pair_compare(0, bk, vnni, sx, wt, T, K, N, &in)) continue;
                        const char *kn = fp_matmul_avx512_name(wt, bk, vnni);
                        ncases++;
                        nbf16dp += strcmp(kn, "avx512-bf16dp") == 0;
                        nvnni += strstr(kn, "vnni") != NULL;
                    }
                /* AVX2: fp_swiglu_forward at that level, which fp_swiglu_forward_fast runs there too */
                fp_kernel_force(FP_KERN_AVX2);
                if ((s + ty + nth) % 2 == 0) navx2 += pair_compare(1, 0, 0, 1, wt, T, K, N, &in);
                pair_inputs_free(&in);
            }
    }
    /* the AMX kind is not the pair's (it returns 1: the caller's fallback) */
    if (fp_cpu_has_amx_bf16()) {
        float o[6 * 32], xx[6 * 32] = {0}, w1f[32 * 32];
        void *w1 = make_weights(FP_BF16, 32, 32, NULL, w1f);
        CHECK(fp_matmul_avx512_swiglu_pair(o, xx, w1, w1, FP_BF16, 6, 32, 32, FP_BF16_AMX, 0, 0) == 1);
        free(w1);
    }
    fp_kernel_force(-1);
    omp_set_num_threads(nmax);
    printf("  %d pair cases (%d vdpbf16ps, %d VNNI), %d on AVX2\n", ncases, nbf16dp, nvnni, navx2);
    CHECK(ncases > 100 && navx2 > 20);
    if (fp_cpu_has_avx512bf16()) CHECK(nbf16dp > 0);
    if (fp_cpu_has_avx512vnni()) CHECK(nvnni > 0);
    return 0;
}

int main(void) {
    RUN(test_level_ref);
    RUN(test_level_avx2);
    RUN(test_level_avx512);
    RUN(test_saturation);
    RUN(test_edges);
    RUN(test_tiles_handoff);
    RUN(test_pair_kernels);
    fp_matmul_scratch_release();
    return th_finish();
}
