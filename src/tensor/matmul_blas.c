/* Optional OpenBLAS path for F32 weights (`make BLAS=1`, which defines FP_WITH_OPENBLAS and links
 * -lopenblas): out[T,N] = inp[T,K] @ W[N,K]^T (+ bias) through cblas_sgemm.  matmul.c decides when it runs
 * (fp_matmul_blas_use); without FP_WITH_OPENBLAS this file compiles to nothing.
 *
 * Threads.  The columns are split over our OpenMP team (omp_get_max_threads(), the count the model sets per
 * call) and each thread runs a single-threaded cblas_sgemm on its slice of W, so OpenBLAS never runs a
 * thread pool of its own next to libgomp's.  Measured (docs/architecture.md): with Debian's default
 * libopenblas0-pthread, letting OpenBLAS thread each call itself (openblas_set_num_threads(
 * omp_get_max_threads())) made a model-like sequence of F32 GEMMs and OpenMP element-wise passes 1.5-1.9x
 * slower at 2 threads than this split, and slower than our own kernel (its workers spin next to the OpenMP
 * team: two pools on the cores); with libopenblas0-openmp both ways ran alike.  Single-threaded calls need:
 *  - libopenblas0-openmp: nothing; OpenBLAS runs on one thread inside an active parallel region;
 *  - libopenblas0-pthread: openblas_set_num_threads(1), done once (process-wide: a program that links
 *    libfluxprm and threads its own OpenBLAS calls gets one thread per call after the first F32 GEMM here).
 * Each output column is one thread's dot products in OpenBLAS's fixed k order, so 1 and 2 threads agree to
 * rounding (in practice bit for bit). */
#ifdef FP_WITH_OPENBLAS
#include "tensor/kernels.h"
#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_threaded(void) {
    if (openblas_get_parallel() == 1 /* pthreads build */ && openblas_get_num_threads() != 1)
        openblas_set_num_threads(1);
}

/* Columns [n0, n1) of out (row stride N). */
static void sgemm_cols(float *out, const float *inp, const float *w, const float *bias, int T, int K, int N, int n0,
                       int n1) {
    int nc = n1 - n0;
    float beta = 0.0f;
    if (bias) { /* C = the bias rows, then C = inp W^T + 1 * C */
        for (int t = 0; t < T; t++) memcpy(out + (size_t)t * N + n0, bias + n0, sizeof(float) * (size_t)nc);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, nc, K, 1.0f, inp, K, w + (size_t)n0 * K, K, beta,
                out + n0, N);
}

/* Column slices of at least this many columns (multiples of 16, OpenBLAS's sgemm n-unroll on AVX-512). */
#define BLAS_MIN_COLS 64

int fp_matmul_blas(float *out, const float *inp, const float *w, const float *bias, int T, int K, int N) {
    pthread_once(&blas_once, blas_single_threaded);
    int nth = omp_get_max_threads();
    if (nth > N / BLAS_MIN_COLS) nth = N / BLAS_MIN_COLS;
    if (nth <= 1) {
        sgemm_cols(out, inp, w, bias, T, K, N, 0, N);
        return 0;
    }
#pragma omp parallel num_threads(nth)
    {
        int i = omp_get_thread_num(), n = omp_get_num_threads();
        int n0 = (int)((long long)N * i / n) & ~15, n1 = i == n - 1 ? N : (int)((long long)N * (i + 1) / n) & ~15;
        if (n1 > n0) sgemm_cols(out, inp, w, bias, T, K, N, n0, n1);
    }
    return 0;
}
#endif
