/* fp_matmul_forward: every kernel level this CPU has (ref, avx2, avx512), every weight dtype, odd shapes
 * and tails, with and without bias, against fp_matmul_forward_ref and a double-precision emulation.
 *
 * Tolerances.  Let S = sum_k |x~_k w_k| + |bias| for one output, x~ the activations as the path sees them,
 * u = 2^-24 (f32 unit roundoff).
 *  - Emulation check (all paths): the kernel's output vs the exact double sum over x~ must be within
 *    8 sqrt(K) u S + 1e-30: f32 accumulation error grows like sqrt(K) u S for random data (the worst case
 *    is K u S); 8 sigma of margin.  A single missing or doubled term (~S/K) is well above this for K <= 4864.
 *  - vs fp_matmul_forward_ref (f32 activations): the same plus the activation rounding bound:
 *      f32 paths:    nothing more (x~ = x);
 *      BF16 path:    x~ = bf16(x), |x~ - x| <= 2^-8 |x|, so + 2^-8 sum|x w|;
 *      AMX path for Q8_0/Q4_0 weights: x~ = bf16(x) and w~ = bf16(d q) (weights dequantised to bf16), so
 *                    + (2^-7 + 2^-16) sum|x w|;
 *      Q8/Q4 path:   x~ = d_b q (per block b of 32: d_b = amax_b/127, |q| <= 127), |x~ - x| <= d_b/2,
 *                    so + sum_b d_b/2 sum_{k in b} |w_k|. */
#include "harness.h"
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/tensor.h"
#include <omp.h>
#include <stdint.h>

#define TH_RNG_SEED 0x9e3779b97f4a7c15ull
#include "random_weights.h"

enum { NUM_F32, NUM_BF16, NUM_Q8 };
static int numerics(const char *name) {
    if (strstr(name, "bf16dp") || strstr(name, "amx")) return NUM_BF16;
    if (strstr(name, "vnni")) return NUM_Q8;
    return NUM_F32;
}

/* The activations as the path sees them; err[t*K/32+b] gets the per-block rounding bound for Q8. */
static void path_activations(int num, const float *x, float *xt, float *qerr, int T, int K) {
    for (int t = 0; t < T; t++) {
        const float *r = x + (size_t)t * K;
        float *o = xt + (size_t)t * K;
        if (num == NUM_F32) memcpy(o, r, sizeof(float) * (size_t)K);
        else if (num == NUM_BF16)
            for (int k = 0; k < K; k++) o[k] = fp_bf16_to_f32(fp_f32_to_bf16(r[k]));
        else
            for (int b = 0; b < K / 32; b++) /* the integers, scaled below in double */
                qerr[(size_t)t * (K / 32) + b] = emulate_q8_block(r + 32 * b, o + 32 * b);
    }
}

/* Variants: the three levels through fp_matmul_forward_level, plus the AVX-512 entry with its optional
 * kernels forced on (vdpbf16ps for BF16, VNNI for Q8_0/Q4_0) or off (f32 FMA for every dtype). */
enum { V_AVX512_DP_VNNI = 10, V_AVX512_F32 = 11, V_AVX512_AMX = 12 };
static const char *variant_name_t(int v, fp_dtype wt, int T) {
    if (T <= FP_GEMV_MAX_T && (v >= V_AVX512_DP_VNNI || v == FP_KERN_AVX512) && fp_cpu_max_kernel() >= FP_KERN_AVX512)
        return "avx512-gemv";
    if (T <= FP_GEMV_MAX_T && v == FP_KERN_AVX2 && fp_cpu_max_kernel() >= FP_KERN_AVX2) return "avx2-gemv";
    if (v == V_AVX512_DP_VNNI) return fp_matmul_avx512_name(wt, FP_BF16_DP, 1);
    if (v == V_AVX512_F32) return fp_matmul_avx512_name(wt, FP_BF16_FMA, 0);
    if (v == V_AVX512_AMX) return fp_matmul_avx512_name(wt, FP_BF16_AMX, 1);
    return fp_matmul_kernel_name_level(v, wt);
}
static const char *variant_name(int v, fp_dtype wt) { return variant_name_t(v, wt, 1000); }
static void variant_run(int v, float *out, const float *x, const void *w, fp_dtype wt, const float *bias, int T,
                        int K, int N) {
    if (v >= V_AVX512_DP_VNNI) {
        int bk = v == V_AVX512_DP_VNNI ? FP_BF16_DP : v == V_AVX512_AMX ? FP_BF16_AMX : FP_BF16_FMA;
        if (fp_matmul_avx512(out, x, w, wt, bias, T, K, N, bk, v != V_AVX512_F32) != 0)
            CHECK_MSG(0, "fp_matmul_avx512 failed");
    } else
        fp_matmul_forward_level(v, out, x, w, wt, bias, T, K, N);
}

static int check_case(int level, fp_dtype wt, int T, int K, int N, int with_bias) {
    float *x = malloc(sizeof(float) * (size_t)T * K), *xt = malloc(sizeof(float) * (size_t)T * K);
    float *wf = malloc(sizeof(float) * (size_t)N * K), *bias = with_bias ? malloc(sizeof(float) * (size_t)N) : NULL;
    float *qd = malloc(sizeof(float) * ((size_t)T * (K / 32) + 1));
    float *out = malloc(sizeof(float) * (size_t)T * N), *ref = malloc(sizeof(float) * (size_t)T * N);
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
    for (int n = 0; with_bias && n < N; n++) bias[n] = frand();
    void *w = make_weights(wt, N, K, NULL, wf);
    for (size_t i = 0; i < (size_t)T * N; i++) out[i] = NAN; /* every element must be written */

    const char *name = variant_name_t(level, wt, T);
    if (level < V_AVX512_DP_VNNI)
        CHECK_MSG(!strcmp(name, fp_matmul_kernel_name_shape(level, wt, T)), "%s vs %s", name,
                  fp_matmul_kernel_name_shape(level, wt, T));
    int num = numerics(name);
    path_activations(num, x, xt, qd, T, K);
    int wround = strstr(name, "amx-bf16-q") != NULL; /* weights rounded to bf16 by the kernel */
    float *we = malloc(sizeof(float) * (size_t)N * K);
    for (size_t i = 0; i < (size_t)N * K; i++) we[i] = wround ? fp_bf16_to_f32(fp_f32_to_bf16(wf[i])) : wf[i];
    variant_run(level, out, x, w, wt, bias, T, K, N);
    fp_matmul_forward_ref(ref, x, w, wt, bias, T, K, N);

    int bad = 0;
    double worst = 0.0;
    const double u = 1.0 / 16777216.0;
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)t * K, *xq = xt + (size_t)t * K, *wr = wf + (size_t)n * K;
            const float *wq = we + (size_t)n * K;
            double exact = bias ? bias[n] : 0.0, S = bias ? fabs(bias[n]) : 0.0, Sx = 0.0, qb = 0.0;
            for (int k = 0; k < K; k++) {
                double xv = xq[k];
                if (num == NUM_Q8) xv *= qd[(size_t)t * (K / 32) + k / 32];
                exact += xv * wq[k];
                S += fabs(xv * wq[k]);
                Sx += fabs((double)xr[k] * wr[k]);
                if (num == NUM_Q8) qb += qd[(size_t)t * (K / 32) + k / 32] * 0.5 * fabs(wr[k]);
            }
            double tol = 8.0 * sqrt((double)K) * u * (S > Sx ? S : Sx) + 1e-30;
            double tol_ref = 2.0 * tol + (num == NUM_BF16 ? Sx / (wround ? 127.0 : 256.0) : num == NUM_Q8 ? qb * 1.0001 : 0.0);
            double o = out[(size_t)t * N + n], e1 = fabs(o - exact), e2 = fabs(o - ref[(size_t)t * N + n]);
            if (!(e1 <= tol) || !(e2 <= tol_ref)) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s %s T=%d K=%d N=%d bias=%d [%d,%d]: got %.9g exact %.9g (tol %.3g) ref %.9g (tol %.3g)\n",
                            name, fp_dtype_name(wt), T, K, N, with_bias, t, n, o, exact, tol,
                            ref[(size_t)t * N + n], tol_ref);
            }
            if (S > 0 && e1 / S > worst) worst = e1 / S;
        }
    }
    CHECK_MSG(bad == 0, "%s %s T=%d K=%d N=%d: %d bad outputs", name, fp_dtype_name(wt), T, K, N, bad);
    free(we); free(x); free(xt); free(wf); free(bias); free(qd); free(out); free(ref); free(w);
    return bad;
}

static const int shapes[][3] = { /* T, K, N */
    {1, 32, 1},    {3, 64, 17},   {1, 1, 5},     {2, 3, 3},     {7, 33, 65},   {5, 96, 130},
    {16, 896, 128}, {13, 131, 70}, {100, 256, 17}, {19, 4864, 40}, {33, 1000, 96}, {31, 512, 64},
    {6, 257, 64},  {12, 896, 31},  {130, 96, 96}, {40, 4200, 64}, {4, 200, 37},
};

static int run_level(int level) {
    int need = level >= V_AVX512_DP_VNNI ? FP_KERN_AVX512 : level;
    if (fp_cpu_max_kernel() < need) {
        printf("  (CPU lacks %s)\n", fp_kernel_level_name(need));
        return TH_SKIP;
    }
    if (level == V_AVX512_DP_VNNI && !(fp_cpu_has_avx512bf16() && fp_cpu_has_avx512vnni())) {
        printf("  (CPU lacks AVX512-BF16 or AVX512-VNNI)\n");
        return TH_SKIP;
    }
    if (level == V_AVX512_AMX && !fp_cpu_has_amx_bf16()) {
        printf("  (no AMX-BF16 on this CPU/OS)\n");
        return TH_SKIP;
    }
    const fp_dtype dts[] = {FP_F32, FP_F16, FP_BF16, FP_Q8_0, FP_Q4_0};
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int T = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            if (dts[d] == FP_Q8_0 || dts[d] == FP_Q4_0) K = (K + 31) / 32 * 32;
            /* the largest shape is there for the AMX kernel's K chunking; skip it elsewhere (time) */
            if ((long)T * K * N > 5000000 && (level == FP_KERN_REF || level == FP_KERN_AVX2 || level == V_AVX512_F32))
                continue;
            check_case(level, dts[d], T, K, N, (int)(s & 1));
            if (s % 5 == 0) check_case(level, dts[d], T, K, N, !(s & 1));
        }
        printf("  %-6s %-5s -> %s\n", level >= V_AVX512_DP_VNNI ? "forced" : fp_kernel_level_name(level),
               fp_dtype_name(dts[d]), variant_name(level, dts[d]));
    }
    return 0;
}

static int test_level_ref(void) { return run_level(FP_KERN_REF); }
static int test_level_avx2(void) { return run_level(FP_KERN_AVX2); }
static int test_level_avx512(void) { return run_level(FP_KERN_AVX512); }
static int test_avx512_bf16dp_vnni(void) { return run_level(V_AVX512_DP_VNNI); }
static int test_avx512_f32_all(void) { return run_level(V_AVX512_F32); }
static int test_amx_bf16(void) { return run_level(V_AVX512_AMX); }

/* The AMX kernel's blocking edges (amx_plan in matmul_avx512.c): k chunks (K > 4096 is split into equal
 * chunks of <= 4096, multiples of 32: K = 4864 -> 2 x 2432, 8960 -> 2 x 3008 + 2944, 4100 -> 2080 + 2048
 * with a ragged tail; with wide outputs into more chunks, so that a group of up to 512 columns over a chunk
 * fits the panel: at 2 threads K x N = 4864 x 600 -> 4 x 1216, 8960 x 520 -> 5 x 1504 + 1440, 4864 x 896
 * -> 4 x 992 + 896, 4100 x 1030 -> 3 x 1376 with a ragged tail), column groups of up to 512 (several groups,
 * a ragged last group, N % 64 != 0), row blocks (with 2+ threads; T % 32 != 0, 5 <= T <= 40), at 1 thread
 * and at the default thread count (the plan depends on it).  Same checks and tolerances as check_case. */
static int test_amx_blocking(void) {
    if (fp_cpu_max_kernel() < FP_KERN_AVX512 || !fp_cpu_has_amx_bf16()) {
        printf("  (no AMX-BF16 on this CPU/OS)\n");
        return TH_SKIP;
    }
    static const int amx_shapes[][3] = { /* T, K, N */
        {37, 4864, 70}, {21, 8960, 45}, {70, 4100, 130}, {45, 96, 1100}, {5, 300, 600},  {40, 1536, 520},
        {200, 256, 200}, {33, 896, 1000}, {9, 4864, 129}, {130, 160, 700}, {64, 8960, 64}, {6, 33, 513},
        {50, 4864, 600}, {33, 8960, 520}, {70, 4864, 896}, {8, 4100, 1030},
    };
    int nmax = omp_get_max_threads();
    for (int pass = 0; pass < 2; pass++) {
        omp_set_num_threads(pass == 0 ? 1 : nmax);
        for (size_t s = 0; s < sizeof amx_shapes / sizeof amx_shapes[0]; s++) {
            int T = amx_shapes[s][0], K = amx_shapes[s][1], N = amx_shapes[s][2];
            check_case(V_AVX512_AMX, FP_BF16, T, K, N, (int)((s + pass) & 1));
            if (s % 4 == 0) check_case(V_AVX512_AMX, FP_Q8_0, T, (K + 31) / 32 * 32, N, (int)(s & 1));
        }
        printf("  amx-bf16 blocking shapes, %d thread(s)\n", pass == 0 ? 1 : nmax);
    }
    omp_set_num_threads(nmax);
    return 0;
}

/* The public entry honours fp_kernel_force / FLUXPRM_KERNEL and reports the kernel it runs. */
static int test_dispatch(void) {
    int max = fp_cpu_max_kernel();
    fp_kernel_force(FP_KERN_REF);
    CHECK(fp_kernel_level() == FP_KERN_REF);
    CHECK(!strcmp(fp_matmul_kernel_name(FP_BF16), "ref"));
    fp_kernel_force(FP_KERN_AVX512);
    CHECK(fp_kernel_level() == max);
    fp_kernel_force(-1);
    const char *e = getenv("FLUXPRM_KERNEL");
    if (!e) CHECK(fp_kernel_level() == max);
    printf("  default: level %s, BF16 -> %s, Q8_0 -> %s\n", fp_kernel_level_name(fp_kernel_level()),
           fp_matmul_kernel_name(FP_BF16), fp_matmul_kernel_name(FP_Q8_0));
    /* one call through the public entry */
    int T = 9, K = 64, N = 20;
    float *wf = malloc(sizeof(float) * N * K), *x = malloc(sizeof(float) * T * K);
    float *o1 = malloc(sizeof(float) * T * N), *o2 = malloc(sizeof(float) * T * N);
    for (int i = 0; i < T * K; i++) x[i] = frand();
    void *w = make_weights(FP_F32, N, K, NULL, wf);
    fp_matmul_forward(o1, x, w, FP_F32, NULL, T, K, N);
    fp_matmul_forward_ref(o2, x, w, FP_F32, NULL, T, K, N);
    for (int i = 0; i < T * N; i++) CHECK_NEAR(o1[i], o2[i], 1e-4);
    free(wf); free(x); free(o1); free(o2); free(w);
    fp_matmul_scratch_release();
    return 0;
}

/* A NaN activation makes its output row NaN (and only that row) on every path. */
static int test_nan_row(void) {
    const int variants[] = {FP_KERN_REF, FP_KERN_AVX2, FP_KERN_AVX512, V_AVX512_DP_VNNI, V_AVX512_F32, V_AVX512_AMX};
    const fp_dtype dts[] = {FP_F32, FP_BF16, FP_Q8_0};
    int T = 3, K = 64, N = 40;
    float *x = malloc(sizeof(float) * T * K), *out = malloc(sizeof(float) * T * N), *wf = malloc(sizeof(float) * N * K);
    for (int i = 0; i < T * K; i++) x[i] = frand();
    x[K + 5] = NAN;
    for (size_t d = 0; d < 3; d++) {
        void *w = make_weights(dts[d], N, K, NULL, wf);
        for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
            int lv = variants[v];
            if (fp_cpu_max_kernel() < (lv >= V_AVX512_DP_VNNI ? FP_KERN_AVX512 : lv)) continue;
            if (lv == V_AVX512_DP_VNNI && !(fp_cpu_has_avx512bf16() && fp_cpu_has_avx512vnni())) continue;
            if (lv == V_AVX512_AMX && !fp_cpu_has_amx_bf16()) continue;
            variant_run(lv, out, x, w, dts[d], NULL, T, K, N);
            int bad = 0;
            for (int t = 0; t < T; t++)
                for (int n = 0; n < N; n++) bad += (t == 1) != (isnan(out[t * N + n]) != 0);
            CHECK_MSG(bad == 0, "%s %s: %d outputs with wrong NaN-ness", variant_name(lv, dts[d]), fp_dtype_name(dts[d]), bad);
        }
        free(w);
    }
    free(x); free(out); free(wf);
    return 0;
}

/* The AMX GEMM's rows do not depend on the blocking: every output starts from its bias (k chunk 0) or from the
 * partial sum in out (later k chunks) and adds the products in k order, whether its row falls in a full 32-row
 * block or in a ragged one (staged through a buffer).  So T rows at once equal the same rows run as two calls
 * split at a row that is not a multiple of 32, bit for bit: the model's chunks of rows (fast precision) then
 * give the same values however T is cut (test_model's test_layer_chunks).  With and without bias, one and
 * several k chunks (K = 4864, 8960), ragged N, BF16 and Q8_0 weights, 1 and 2 threads. */
static int test_amx_row_split(void) {
    if (fp_cpu_max_kernel() < FP_KERN_AVX512 || !fp_cpu_has_amx_bf16()) {
        printf("  (no AMX-BF16 on this CPU/OS)\n");
        return TH_SKIP;
    }
    static const int sh[][4] = { /* T, K, N, split */
        {100, 896, 70, 37}, {77, 4864, 96, 45}, {64, 8960, 40, 17}, {40, 96, 1100, 9}, {200, 4864, 33, 101},
    };
    int nmax = omp_get_max_threads(), ncases = 0;
    for (int nth = 1; nth <= 2; nth++) {
        omp_set_num_threads(nth);
        for (size_t si = 0; si < sizeof sh / sizeof sh[0]; si++)
            for (int q = 0; q <= 1; q++)
                for (int wb = 0; wb <= 1; wb++) {
                    int T = sh[si][0], K = sh[si][1], N = sh[si][2], sp = sh[si][3];
                    fp_dtype wt = q ? FP_Q8_0 : FP_BF16;
                    float *x = malloc(sizeof(float) * (size_t)T * K), *wf = malloc(sizeof(float) * (size_t)N * K);
                    float *bias = malloc(sizeof(float) * N), *o1 = malloc(sizeof(float) * (size_t)T * N);
                    float *o2 = malloc(sizeof(float) * (size_t)T * N);
                    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand();
                    for (int n = 0; n < N; n++) bias[n] = 4.0f * frand();
                    void *w = make_weights(wt, N, K, NULL, wf);
                    const float *b = wb ? bias : NULL;
                    CHECK(fp_matmul_avx512(o1, x, w, wt, b, T, K, N, FP_BF16_AMX, 0) == 0);
                    CHECK(fp_matmul_avx512(o2, x, w, wt, b, sp, K, N, FP_BF16_AMX, 0) == 0);
                    CHECK(fp_matmul_avx512(o2 + (size_t)sp * N, x + (size_t)sp * K, w, wt, b, T - sp, K, N,
                                           FP_BF16_AMX, 0) == 0);
                    size_t nd = 0;
                    for (size_t i = 0; i < (size_t)T * N; i++) nd += memcmp(&o1[i], &o2[i], sizeof(float)) != 0;
                    CHECK_MSG(nd == 0, "%s T=%d K=%d N=%d bias %d, %d thread(s): %zu outputs differ when split at row %d",
                              fp_dtype_name(wt), T, K, N, wb, nth, nd, sp);
                    ncases++;
                    free(x); free(wf); free(bias); free(o1); free(o2); free(w);
                }
    }
    omp_set_num_threads(nmax);
    printf("  %d split cases\n", ncases);
    return 0;
}

int main(void) {
    RUN(test_dispatch);
    RUN(test_level_ref);
    RUN(test_level_avx2);
    RUN(test_level_avx512);
    RUN(test_avx512_bf16dp_vnni);
    RUN(test_avx512_f32_all);
    RUN(test_amx_bf16);
    RUN(test_amx_blocking);
    RUN(test_nan_row);
    RUN(test_amx_row_split);
    fp_matmul_scratch_release();
    return th_finish();
}
