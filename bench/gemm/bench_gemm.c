/* GEMM benchmark: GFLOP/s of fp_matmul_forward per kernel level, weight dtype and shape.
 *
 *   bench_gemm [--threads N] [--reps R] [--dtypes BF16,F32,...] [--levels avx512,avx2,ref]
 *              [--shape TxKxN]... [--ref-T T] [--no-blas]
 * Default shapes: the Qwen2.5-0.5B projections (K=896: N=896,128,4864; K=4864: N=896) and the 1.5B ones
 * (K=1536: N=1536,8960; K=8960: N=1536) at T=512 and 2048.
 * Each figure is the median over R timed calls (after one warm-up call); 2*T*K*N flops per call.
 * The scalar reference is timed at T=--ref-T (default 32) rows only, since it is ~100x slower; its
 * GFLOP/s barely depends on T.  Output: one line per measurement:
 *   path dtype T K N threads GFLOP/s(median wall) ms(median) best-GFLOP/s(min wall) cpu-GFLOP/s
 * where cpu-GFLOP/s divides by the median process CPU time / threads: on a shared machine it discounts
 * time the threads were preempted (it counts OpenMP spin-waiting, so it is a lower bound per thread).
 * In a `make BLAS=1` build, F32 weights at the avx512/avx2 levels get two rows, both in this run: our kernel
 * (OpenBLAS forced off) and then "openblas-sgemm" (cblas_sgemm forced on whatever the shape rule says), whose
 * last column is its median-wall GFLOP/s over our kernel's (x-ours=R); --no-blas keeps only our kernel. */
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/tensor.h"
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../bench_util.h"

static void *make_w(fp_dtype wt, int N, int K) {
    size_t rb = fp_dtype_row_bytes(wt, K);
    uint8_t *w = malloc(rb * (size_t)N);
    for (int n = 0; n < N; n++) {
        uint8_t *row = w + rb * (size_t)n;
        if (wt == FP_Q8_0 || wt == FP_Q4_0) {
            size_t bs = wt == FP_Q8_0 ? 34 : 18;
            for (int b = 0; b < K / 32; b++) {
                uint16_t d = fp_f32_to_f16(0.01f * frand());
                memcpy(row + bs * b, &d, 2);
                for (size_t j = 2; j < bs; j++) row[bs * b + j] = (uint8_t)(bench_rng >> 50);
                frand();
            }
            continue;
        }
        for (int k = 0; k < K; k++) {
            float v = frand() * 0.05f;
            if (wt == FP_F32) memcpy(row + 4 * (size_t)k, &v, 4);
            else {
                uint16_t h = wt == FP_BF16 ? fp_f32_to_bf16(v) : fp_f32_to_f16(v);
                memcpy(row + 2 * (size_t)k, &h, 2);
            }
        }
    }
    return w;
}

static int parse_dtype(const char *s, fp_dtype *d) {
    const fp_dtype all[] = {FP_F32, FP_F16, FP_BF16, FP_Q8_0, FP_Q4_0};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, fp_dtype_name(all[i]))) { *d = all[i]; return 1; }
    return 0;
}

/* Times fp_matmul_forward_level (one warm-up call, then r timed calls) and prints the row without its
 * newline; returns the median-wall GFLOP/s. */
static double time_one(int level, float *out, const float *x, const void *w, fp_dtype wt, const float *bias, int T,
                       int K, int N, int r) {
    double *ts = malloc(sizeof(double) * r), *cs = malloc(sizeof(double) * r);
    const char *name = fp_matmul_kernel_name_gemm(level, wt, T, K, N);
    fp_matmul_forward_level(level, out, x, w, wt, bias, T, K, N); /* warm-up */
    for (int i = 0; i < r; i++) {
        double c0 = cpu_now(), t0 = now();
        fp_matmul_forward_level(level, out, x, w, wt, bias, T, K, N);
        ts[i] = now() - t0;
        cs[i] = (cpu_now() - c0) / omp_get_max_threads();
    }
    qsort(ts, r, sizeof(double), cmp_d);
    qsort(cs, r, sizeof(double), cmp_d);
    double fl = 2.0 * T * (double)K * N, med = ts[r / 2];
    printf("%-16s %-5s %5d %5d %5d %3d %9.1f %9.3f %9.1f %9.1f", name, fp_dtype_name(wt), T, K, N,
           omp_get_max_threads(), fl / med * 1e-9, med * 1e3, fl / ts[0] * 1e-9, fl / cs[r / 2] * 1e-9);
    free(ts);
    free(cs);
    return fl / med * 1e-9;
}

int main(int argc, char **argv) {
    int threads = 0, reps = 7, refT = 32, nshape = 0, use_blas = 1;
    int shapes[64][3];
    char dtypes[256] = "BF16,F32,F16,Q8_0,Q4_0", levels[128] = "avx512,avx2,ref";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ref-T") && i + 1 < argc) refT = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-blas")) use_blas = 0;
        else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc) snprintf(dtypes, sizeof dtypes, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--levels") && i + 1 < argc) snprintf(levels, sizeof levels, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc && nshape < 64) {
            if (sscanf(argv[++i], "%dx%dx%d", &shapes[nshape][0], &shapes[nshape][1], &shapes[nshape][2]) == 3)
                nshape++;
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--reps R] [--dtypes BF16,F32,F16,Q8_0,Q4_0] "
                            "[--levels avx512,avx2,ref] [--shape TxKxN]... [--ref-T T] [--no-blas]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (threads > 0) omp_set_num_threads(threads);
    if (!nshape) {
        const int def[][3] = {{512, 896, 896},   {512, 896, 128},   {512, 896, 4864},   {512, 4864, 896},
                              {2048, 896, 896},  {2048, 896, 128},  {2048, 896, 4864},  {2048, 4864, 896},
                              {512, 1536, 1536}, {512, 1536, 8960}, {512, 8960, 1536},
                              {2048, 1536, 1536}, {2048, 1536, 8960}, {2048, 8960, 1536}};
        nshape = (int)(sizeof def / sizeof def[0]);
        memcpy(shapes, def, sizeof def);
    }
    printf("# threads=%d cpu_max=%s openblas=%s\n", omp_get_max_threads(), fp_kernel_level_name(fp_cpu_max_kernel()),
           !fp_matmul_blas_available() ? "not built (make BLAS=1)" : use_blas ? "compared on F32" : "off (--no-blas)");
    printf("# %-14s %-5s %5s %5s %5s %3s %9s %9s %9s %9s\n", "path", "dtype", "T", "K", "N", "thr", "GFLOP/s", "ms",
           "best", "cpu");
    char dl[256];
    snprintf(dl, sizeof dl, "%s", dtypes);
    for (char *ds = strtok(dl, ","); ds; ds = strtok(NULL, ",")) {
        fp_dtype wt;
        if (!parse_dtype(ds, &wt)) { fprintf(stderr, "unknown dtype %s\n", ds); return 2; }
        for (int s = 0; s < nshape; s++) {
            int T0 = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            void *w = make_w(wt, N, K);
            float *x = malloc(sizeof(float) * (size_t)T0 * K), *out = malloc(sizeof(float) * (size_t)T0 * N);
            float *bias = malloc(sizeof(float) * (size_t)N);
            for (size_t i = 0; i < (size_t)T0 * K; i++) x[i] = frand();
            for (int n = 0; n < N; n++) bias[n] = frand();
            char ll[128];
            snprintf(ll, sizeof ll, "%s", levels);
            char *save = NULL;
            for (char *ls = strtok_r(ll, ",", &save); ls; ls = strtok_r(NULL, ",", &save)) {
                int level = !strcmp(ls, "avx512") ? FP_KERN_AVX512 : !strcmp(ls, "avx2") ? FP_KERN_AVX2 : FP_KERN_REF;
                if (level > fp_cpu_max_kernel()) continue;
                int T = level == FP_KERN_REF && refT < T0 ? refT : T0;
                int r = level == FP_KERN_REF ? 3 : reps;
                /* with OpenBLAS: our kernel first (BLAS off), then cblas_sgemm (forced) on the same data */
                int blas = use_blas && fp_matmul_blas_available() && wt == FP_F32 && level >= FP_KERN_AVX2 &&
                           T > FP_GEMV_MAX_T;
                double ours = 0.0;
                for (int pass = 0; pass < (blas ? 2 : 1); pass++) {
                    if (fp_matmul_blas_available()) fp_matmul_blas_force(pass ? FP_BLAS_ALWAYS : FP_BLAS_OFF);
                    double gf = time_one(level, out, x, w, wt, bias, T, K, N, r);
                    if (pass) printf(" x-ours=%.2f", gf / ours);
                    ours = gf;
                    printf("\n");
                    fflush(stdout);
                }
                if (fp_matmul_blas_available()) fp_matmul_blas_force(FP_BLAS_AUTO);
            }
            free(w); free(x); free(out); free(bias);
        }
    }
    fp_matmul_scratch_release();
    return 0;
}
