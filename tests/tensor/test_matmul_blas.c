/* The optional OpenBLAS path for F32 weights (`make BLAS=1`: FP_WITH_OPENBLAS, cblas_sgemm, kernel name
 * "openblas-sgemm").  In a build without it, the dispatch must never take it (checked) and every OpenBLAS case
 * is skipped visibly.  With it:
 *  - odd shapes (T 5, 17, 100, 513; K 1, 33, 896; N 1, 50, 4864), with and without bias, at 1 and 2 threads,
 *    through fp_matmul_forward_level with the path forced on, against a double-precision sum: within
 *    8 sqrt(K) u S + 1e-30, S = sum_k |x_k w_k| + |bias|, u = 2^-24 (test_matmul.c's f32 bound: f32
 *    accumulation error grows like sqrt(K) u S for random data; a missing or doubled term is ~S/K, far above);
 *    the 1- and 2-thread results agree within twice that bound;
 *  - the dispatch took the path: the kernel name says "openblas-sgemm" and the output equals a direct
 *    fp_matmul_blas call bit for bit; forced off, or FLUXPRM_BLAS=0 in the environment (read once: checked in
 *    a child process), the name and the bits are those of our kernel; exact and fast precision agree;
 *  - the shape rule: GEMV-sized T, other dtypes, the ref level and calls inside an OpenMP parallel region keep
 *    our kernels. */
#include "harness.h"
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/tensor.h"
#include <omp.h>
#include <stdint.h>

#define TH_RNG_SEED 0x6a09e667f3bcc908ull
#include "random_weights.h"

#ifdef FP_WITH_OPENBLAS
#define HAVE_BLAS 1
#else
#define HAVE_BLAS 0
#endif

static int blas_ready(void) {
    if (!HAVE_BLAS) {
        printf("  (needs a `make BLAS=1` build: FP_WITH_OPENBLAS is not defined)\n");
        return 0;
    }
    if (fp_cpu_max_kernel() < FP_KERN_AVX2) {
        printf("  (CPU lacks AVX2: the OpenBLAS path replaces the avx2/avx512 f32 kernels only)\n");
        return 0;
    }
    return 1;
}

static const char *our_f32_name(int level) {
    return level >= FP_KERN_AVX512 ? fp_matmul_avx512_name(FP_F32, FP_BF16_FMA, 0) : "avx2-f32fma";
}

/* Rows checked against the double sum (all of them up to 20 rows; edges and a spread beyond). */
static int take_row(int T, int t) {
    return T <= 20 || t < 3 || t >= T - 3 || t == 15 || t == 16 || t % 61 == 7;
}

/* Max over the checked outputs of |out - exact| / (8 sqrt(K) u S + 1e-30); > 1 fails.  out must be fully
 * written (NaN-filled before the call). */
static double worst_ratio(const float *out, const float *x, const float *wf, const float *bias, int T, int K, int N,
                          const char *what) {
    const double u = 1.0 / 16777216.0;
    double worst = 0.0;
    int bad = 0;
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++)
            if (isnan(out[(size_t)t * N + n]) && bad++ < 3) fprintf(stderr, "  %s: [%d,%d] not written\n", what, t, n);
        if (!take_row(T, t)) continue;
        const float *xr = x + (size_t)t * K;
        for (int n = 0; n < N; n++) {
            const float *wr = wf + (size_t)n * K;
            double exact = bias ? bias[n] : 0.0, S = bias ? fabs(bias[n]) : 0.0;
            for (int k = 0; k < K; k++) {
                double p = (double)xr[k] * wr[k];
                exact += p;
                S += fabs(p);
            }
            double tol = 8.0 * sqrt((double)K) * u * S + 1e-30, e = fabs(out[(size_t)t * N + n] - exact);
            if (!(e <= tol) && bad++ < 3)
                fprintf(stderr, "  %s: [%d,%d] got %.9g exact %.9g (tol %.3g)\n", what, t, n, out[(size_t)t * N + n],
                        exact, tol);
            if (e / tol > worst) worst = e / tol;
        }
    }
    CHECK_MSG(bad == 0, "%s: %d bad outputs", what, bad);
    return worst;
}

/* ---- a build without OpenBLAS never takes the path (this case runs in every build) */
static int test_build_flag(void) {
    CHECK(fp_matmul_blas_available() == HAVE_BLAS);
    if (!HAVE_BLAS) {
        fp_matmul_blas_force(FP_BLAS_ALWAYS); /* no effect without OpenBLAS */
        CHECK(fp_matmul_blas_mode() == FP_BLAS_OFF);
        CHECK(!fp_matmul_blas_use(FP_KERN_AVX512, FP_F32, 512, 896, 4864));
        CHECK(strcmp(fp_matmul_kernel_name_gemm(FP_KERN_AVX512, FP_F32, 512, 896, 4864), "openblas-sgemm") != 0);
        fp_matmul_blas_force(FP_BLAS_AUTO);
        printf("  no OpenBLAS in this build: F32 weights -> %s\n",
               fp_matmul_kernel_name_gemm(FP_KERN_AVX512, FP_F32, 512, 896, 4864));
    } else {
        printf("  OpenBLAS built in; mode %d (FLUXPRM_BLAS=%s)\n", fp_matmul_blas_mode(),
               getenv("FLUXPRM_BLAS") ? getenv("FLUXPRM_BLAS") : "unset");
    }
    return 0;
}

/* ---- odd shapes, bias / no bias, 1 and 2 threads, against the double sum */
static int test_shapes(void) {
    if (!blas_ready()) return TH_SKIP;
    const int Ts[] = {5, 17, 100, 513}, Ks[] = {1, 33, 896}, Ns[] = {1, 50, 4864};
    int level = fp_cpu_max_kernel(), nmax = omp_get_max_threads(), ncase = 0, nbits = 0;
    double worst = 0.0;
    fp_matmul_blas_force(FP_BLAS_ALWAYS);
    for (int ti = 0; ti < 4; ti++)
        for (int ki = 0; ki < 3; ki++)
            for (int ni = 0; ni < 3; ni++) {
                int T = Ts[ti], K = Ks[ki], N = Ns[ni], with_bias = (ti + ki + ni) & 1;
                size_t TK = (size_t)T * K, TN = (size_t)T * N;
                float *x = malloc(sizeof(float) * TK), *wf = malloc(sizeof(float) * (size_t)N * K);
                float *bias = with_bias ? malloc(sizeof(float) * (size_t)N) : NULL;
                float *o1 = malloc(sizeof(float) * TN), *o2 = malloc(sizeof(float) * TN);
                for (size_t i = 0; i < TK; i++) x[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
                for (int n = 0; with_bias && n < N; n++) bias[n] = frand();
                void *w = make_weights(FP_F32, N, K, NULL, wf);
                CHECK_MSG(!strcmp(fp_matmul_kernel_name_gemm(level, FP_F32, T, K, N), "openblas-sgemm"), "%s",
                          fp_matmul_kernel_name_gemm(level, FP_F32, T, K, N));
                char what[128];
                for (int pass = 0; pass < 2; pass++) {
                    float *o = pass ? o2 : o1;
                    omp_set_num_threads(pass ? 2 : 1);
                    for (size_t i = 0; i < TN; i++) o[i] = NAN;
                    fp_matmul_forward_level(level, o, x, w, FP_F32, bias, T, K, N);
                    snprintf(what, sizeof what, "T=%d K=%d N=%d bias=%d threads=%d", T, K, N, with_bias, pass ? 2 : 1);
                    double r = worst_ratio(o, x, wf, bias, T, K, N, what);
                    if (r > worst) worst = r;
                }
                omp_set_num_threads(nmax);
                /* 1 vs 2 threads: each within the bound of the exact sum, so within twice it of each other */
                int differ = 0;
                for (size_t i = 0; i < TN; i++) differ += memcmp(&o1[i], &o2[i], sizeof(float)) != 0;
                if (!differ) nbits++;
                ncase++;
                free(x); free(wf); free(bias); free(o1); free(o2); free(w);
            }
    fp_matmul_blas_force(FP_BLAS_AUTO);
    printf("  %d shapes x {1, 2} threads: worst |err| / bound %.3g; 1 vs 2 threads bit-identical in %d/%d\n", ncase,
           worst, nbits, ncase);
    return 0;
}

/* ---- the dispatch really runs cblas_sgemm when it says so, and our kernel when forced off */
static void dispatch_at(int level) {
    int T = 64, K = 896, N = 300;
    size_t TN = (size_t)T * N;
    float *x = malloc(sizeof(float) * (size_t)T * K), *wf = malloc(sizeof(float) * (size_t)N * K);
    float *bias = malloc(sizeof(float) * (size_t)N), *o = malloc(sizeof(float) * TN), *d = malloc(sizeof(float) * TN);
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand();
    for (int n = 0; n < N; n++) bias[n] = frand();
    void *w = make_weights(FP_F32, N, K, NULL, wf);

    fp_matmul_blas_force(FP_BLAS_ALWAYS);
    CHECK(fp_matmul_blas_mode() == FP_BLAS_ALWAYS);
    CHECK(fp_matmul_blas_use(level, FP_F32, T, K, N));
    const char *name_on = fp_matmul_kernel_name_gemm(level, FP_F32, T, K, N);
    CHECK(!strcmp(name_on, "openblas-sgemm"));
    fp_matmul_forward_level(level, o, x, w, FP_F32, bias, T, K, N);
    CHECK(fp_matmul_blas(d, x, w, bias, T, K, N) == 0);
    CHECK_MSG(!memcmp(o, d, sizeof(float) * TN), "dispatch output differs from a direct cblas_sgemm call");
    /* exact and fast precision: F32 weights keep f32 activations, the same call either way */
    fp_kernel_force(level);
    fp_matmul_forward_ex(1, o, x, w, FP_F32, bias, T, K, N);
    CHECK_MSG(!memcmp(o, d, sizeof(float) * TN), "exact precision did not take the OpenBLAS path");
    fp_matmul_forward_ex(0, o, x, w, FP_F32, bias, T, K, N);
    CHECK_MSG(!memcmp(o, d, sizeof(float) * TN), "fast precision did not take the OpenBLAS path");
    fp_kernel_force(-1);

    fp_matmul_blas_force(FP_BLAS_OFF);
    CHECK(fp_matmul_blas_mode() == FP_BLAS_OFF);
    CHECK(!fp_matmul_blas_use(level, FP_F32, T, K, N));
    CHECK_MSG(!strcmp(fp_matmul_kernel_name_gemm(level, FP_F32, T, K, N), our_f32_name(level)), "%s",
              fp_matmul_kernel_name_gemm(level, FP_F32, T, K, N));
    fp_matmul_forward_level(level, o, x, w, FP_F32, bias, T, K, N);
    if (level >= FP_KERN_AVX512) CHECK(fp_matmul_avx512(d, x, w, FP_F32, bias, T, K, N, FP_BF16_FMA, 0) == 0);
    else CHECK(fp_matmul_avx2(d, x, w, FP_F32, bias, T, K, N) == 0);
    CHECK_MSG(!memcmp(o, d, sizeof(float) * TN), "forced off: output differs from our f32 kernel");
    worst_ratio(o, x, wf, bias, T, K, N, "forced off");
    fp_matmul_blas_force(FP_BLAS_AUTO);
    printf("  %s: forced on -> %s, forced off -> %s\n", fp_kernel_level_name(level), name_on, our_f32_name(level));
    free(x); free(wf); free(bias); free(o); free(d); free(w);
}

static int test_dispatch(void) {
    if (!blas_ready()) return TH_SKIP;
    for (int level = FP_KERN_AVX2; level <= fp_cpu_max_kernel(); level++) dispatch_at(level);
    fp_matmul_scratch_release();
    return 0;
}

/* ---- the rule: where the path is taken with the default mode */
static int test_rule(void) {
    if (!blas_ready()) return TH_SKIP;
    if (getenv("FLUXPRM_BLAS")) {
        printf("  (FLUXPRM_BLAS is set in the environment; the default mode is checked in a child)\n");
        return TH_SKIP;
    }
    int level = fp_cpu_max_kernel();
    fp_matmul_blas_force(FP_BLAS_AUTO);
    CHECK(fp_matmul_blas_mode() == FP_BLAS_ON);
    /* the model's large projections (Qwen2.5 0.5B MLP, 1.5B MLP) at prefill sizes */
    CHECK(fp_matmul_blas_use(level, FP_F32, 512, 896, 4864));
    CHECK(fp_matmul_blas_use(level, FP_F32, 2048, 4864, 896));
    CHECK(fp_matmul_blas_use(level, FP_F32, 64, 1536, 8960));
    CHECK(!strcmp(fp_matmul_kernel_name_gemm(level, FP_F32, 512, 1536, 8960), "openblas-sgemm"));
    /* GEMV-sized T, other dtypes, the reference level: our kernels */
    CHECK(!fp_matmul_blas_use(level, FP_F32, FP_GEMV_MAX_T, 1536, 8960));
    CHECK(!strcmp(fp_matmul_kernel_name_gemm(level, FP_F32, 1, 1536, 8960), level >= FP_KERN_AVX512 ? "avx512-gemv"
                                                                                                     : "avx2-gemv"));
    CHECK(!fp_matmul_blas_use(level, FP_BF16, 512, 1536, 8960));
    CHECK(!fp_matmul_blas_use(level, FP_F16, 512, 1536, 8960));
    CHECK(!fp_matmul_blas_use(level, FP_Q8_0, 512, 1536, 8960));
    CHECK(!fp_matmul_blas_use(FP_KERN_REF, FP_F32, 512, 1536, 8960));
    /* the rule as documented, for the shapes it names */
    for (int T = 5; T <= 4096; T *= 3)
        for (int K = 1; K <= 9000; K = K * 5 + 3)
            for (int N = 1; N <= 9000; N = N * 5 + 3)
                CHECK(fp_matmul_blas_use(level, FP_F32, T, K, N) == fp_matmul_blas_rule(T, K, N));
    /* inside an OpenMP parallel region (our kernels run nested calls on one thread): never */
    int inside = -1;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        inside = omp_in_parallel() ? fp_matmul_blas_use(level, FP_F32, 512, 1536, 8960) : 0;
    }
    CHECK(inside == 0);
    printf("  F32 at %s: 512x896x4864 -> %s, 512x896x896 -> %s, 4x1536x8960 -> %s\n", fp_kernel_level_name(level),
           fp_matmul_kernel_name_gemm(level, FP_F32, 512, 896, 4864),
           fp_matmul_kernel_name_gemm(level, FP_F32, 512, 896, 896),
           fp_matmul_kernel_name_gemm(level, FP_F32, 4, 1536, 8960));
    return 0;
}

/* ---- nested: F32 GEMMs called from the threads of a parallel region are right (our kernel, one thread) */
static int test_nested(void) {
    if (!blas_ready()) return TH_SKIP;
    int T = 40, K = 96, N = 4864;
    float *x = malloc(sizeof(float) * (size_t)T * K), *wf = malloc(sizeof(float) * (size_t)N * K);
    float *o[2] = {malloc(sizeof(float) * (size_t)T * N), malloc(sizeof(float) * (size_t)T * N)};
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand();
    void *w = make_weights(FP_F32, N, K, NULL, wf);
    int team = 1;
    fp_matmul_blas_force(FP_BLAS_ALWAYS);
#pragma omp parallel num_threads(2)
    {
        int i = omp_get_thread_num();
        if (i == 0) team = omp_get_num_threads();
        if (i < 2) {
            for (size_t j = 0; j < (size_t)T * N; j++) o[i][j] = NAN;
            fp_matmul_forward(o[i], x, w, FP_F32, NULL, T, K, N);
        }
    }
    fp_matmul_blas_force(FP_BLAS_AUTO);
    for (int i = 0; i < team && i < 2; i++) worst_ratio(o[i], x, wf, NULL, T, K, N, i ? "nested thread 1" : "nested thread 0");
    free(x); free(wf); free(o[0]); free(o[1]); free(w);
    return 0;
}

/* ---- FLUXPRM_BLAS=0 turns the path off (read once, at the first use): checked in a child process */
static int child_main(void) {
    int level = fp_cpu_max_kernel();
    printf("mode=%d use=%d name=%s\n", fp_matmul_blas_mode(), fp_matmul_blas_use(level, FP_F32, 512, 1536, 8960),
           fp_matmul_kernel_name_gemm(level, FP_F32, 512, 1536, 8960));
    return 0;
}

static int run_child(const char *env, char *buf, size_t cap) {
    char cmd[4200], self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = 0;
    snprintf(cmd, sizeof cmd, "%s '%s' --child", env, self);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t got = fread(buf, 1, cap - 1, p);
    buf[got] = 0;
    return pclose(p) == 0 ? 0 : -1;
}

static int test_env_off(void) {
    if (!blas_ready()) return TH_SKIP;
    char off[256], on[256], expect[256];
    CHECK(run_child("FLUXPRM_BLAS=0", off, sizeof off) == 0);
    CHECK(run_child("env -u FLUXPRM_BLAS", on, sizeof on) == 0);
    int level = fp_cpu_max_kernel();
    snprintf(expect, sizeof expect, "mode=%d use=0 name=%s\n", FP_BLAS_OFF, our_f32_name(level));
    CHECK_MSG(!strcmp(off, expect), "FLUXPRM_BLAS=0: %s", off);
    snprintf(expect, sizeof expect, "mode=%d use=1 name=openblas-sgemm\n", FP_BLAS_ON);
    CHECK_MSG(!strcmp(on, expect), "FLUXPRM_BLAS unset: %s", on);
    printf("  FLUXPRM_BLAS=0: %s  unset: %s", off, on);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--child")) return child_main();
    RUN(test_build_flag);
    RUN(test_shapes);
    RUN(test_dispatch);
    RUN(test_rule);
    RUN(test_nested);
    RUN(test_env_off);
    fp_matmul_scratch_release();
    return th_finish();
}
