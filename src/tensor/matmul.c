/* Matrix multiply out[T,N] = inp[T,K] @ W[N,K]^T + bias: reference kernel, scratch and dispatch.
 * The fast kernels live in matmul_avx512.c and matmul_avx2.c (compiled with their -m flags only);
 * cpu.c picks the level at run time.  `make BLAS=1` adds the OpenBLAS path for F32 weights (matmul_blas.c;
 * the rule and the FLUXPRM_BLAS switch are here). */
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Reference: one weight row converted to f32 at a time; f32 accumulation in k order. */
void fp_matmul_forward_ref(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                           int T, int K, int N) {
    size_t row_bytes = fp_dtype_row_bytes(wt, K);
#pragma omp parallel
    {
        float *wrow = malloc(sizeof(float) * (size_t)(K > 0 ? K : 1));
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            if (!wrow) continue;
            fp_row_to_f32(wrow, (const char *)w + (size_t)n * row_bytes, wt, K);
            for (int t = 0; t < T; t++) {
                const float *x = inp + (size_t)t * K;
                float acc = 0.0f;
                for (int k = 0; k < K; k++) acc += x[k] * wrow[k];
                out[(size_t)t * N + n] = acc + (bias ? bias[n] : 0.0f);
            }
        }
        free(wrow);
    }
}

/* ---------------------------------------------------------------- scratch */
static _Thread_local void *scratch_ptr;
static _Thread_local size_t scratch_cap;

void *fp_matmul_scratch(size_t bytes) {
    if (bytes <= scratch_cap) return scratch_ptr;
    size_t cap = (bytes + 4095) & ~(size_t)4095;
    if (cap < scratch_cap + scratch_cap / 4) cap = (scratch_cap + scratch_cap / 4 + 4095) & ~(size_t)4095;
    void *p = aligned_alloc(64, cap);
    if (!p) return NULL;
    free(scratch_ptr);
    scratch_ptr = p;
    scratch_cap = cap;
    return p;
}

void fp_matmul_scratch_release(void) {
    free(scratch_ptr);
    scratch_ptr = NULL;
    scratch_cap = 0;
}

/* ---------------------------------------------------------------- dispatch */
static int valid_shape(fp_dtype wt, int T, int K, int N) {
    if (T <= 0 || N <= 0 || K <= 0) return 0;
    if ((wt == FP_Q8_0 || wt == FP_Q4_0) && K % 32) return 0;
    return 1;
}

static void matmul_dispatch(int level, int exact, float *out, const float *inp, const void *w, fp_dtype wt,
                            const float *bias, int T, int K, int N);

void fp_matmul_forward_level(int level, float *out, const float *inp, const void *w, fp_dtype wt,
                             const float *bias, int T, int K, int N) {
    matmul_dispatch(level, 0, out, inp, w, wt, bias, T, K, N);
}

void fp_matmul_forward_ex(int exact, float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                          int T, int K, int N) {
    matmul_dispatch(fp_kernel_level(), exact, out, inp, w, wt, bias, T, K, N);
}

/* ---------------------------------------------------------------- OpenBLAS (make BLAS=1) */
#ifdef FP_WITH_OPENBLAS
static int blas_forced = FP_BLAS_AUTO; /* set by fp_matmul_blas_force */

static int blas_env(void) {
    static int cached = -2; /* -2: not read yet */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v == -2) {
        const char *e = getenv("FLUXPRM_BLAS");
        v = e && (!strcmp(e, "0") || !strcmp(e, "off")) ? FP_BLAS_OFF : FP_BLAS_ON;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

int fp_matmul_blas_available(void) {
#ifdef FP_WITH_OPENBLAS
    return 1;
#else
    return 0;
#endif
}

int fp_matmul_blas_mode(void) {
#ifdef FP_WITH_OPENBLAS
    int m = __atomic_load_n(&blas_forced, __ATOMIC_RELAXED);
    return m == FP_BLAS_AUTO ? blas_env() : m;
#else
    return FP_BLAS_OFF;
#endif
}

void fp_matmul_blas_force(int mode) {
#ifdef FP_WITH_OPENBLAS
    if (mode != FP_BLAS_OFF && mode != FP_BLAS_ON && mode != FP_BLAS_ALWAYS) mode = FP_BLAS_AUTO;
    __atomic_store_n(&blas_forced, mode, __ATOMIC_RELAXED);
#else
    (void)mode;
#endif
}

/* Where cblas_sgemm (Debian's OpenBLAS 0.3.21, column-split over our threads) beat avx512-f32fma at 1 and 2
 * threads in bench/gemm (docs/architecture.md): large weight matrices at any T > 4 (896x4864, 4864x896,
 * 1536x8960, 8960x1536: 1.0-2.7x), mid-sized ones from T = 64 (1536x1536: 1.04-1.5x; it lost up to 18% below)
 * and the 896x896 ones from T = 512 (1.02-1.15x).  Smaller matrices (896x128, 1536x256) were a toss-up
 * (0.8-1.2x beyond T = 5) and keep our kernel. */
int fp_matmul_blas_rule(int T, int K, int N) {
    long long w = (long long)K * N;
    return T > FP_GEMV_MAX_T && (w >= (1ll << 22) || (T >= 64 && w >= (1ll << 21)) || (T >= 512 && w >= (1ll << 19)));
}

static int blas_use_clamped(int level, fp_dtype wt, int T, int K, int N) {
    if (wt != FP_F32 || level < FP_KERN_AVX2 || T <= FP_GEMV_MAX_T || K <= 0 || N <= 0) return 0;
    int mode = fp_matmul_blas_mode();
    if (mode == FP_BLAS_OFF) return 0;
    if (mode != FP_BLAS_ALWAYS && !fp_matmul_blas_rule(T, K, N)) return 0;
    return !omp_in_parallel();
}

int fp_matmul_blas_use(int level, fp_dtype wt, int T, int K, int N) {
    int max = fp_cpu_max_kernel();
    return blas_use_clamped(level > max ? max : level, wt, T, K, N);
}

#ifndef FP_WITH_OPENBLAS
int fp_matmul_blas(float *out, const float *inp, const float *w, const float *bias, int T, int K, int N) {
    (void)out, (void)inp, (void)w, (void)bias, (void)T, (void)K, (void)N;
    return -1; /* not reached: fp_matmul_blas_use is 0 without OpenBLAS */
}
#endif

/* exact: keep f32 activations (bf16/f16/q weights widened to f32 + FMA) instead of the bf16-dot / AMX / VNNI
 * kernels that round activations to bf16 or int8: fp_matmul_avx512's bf16_kernel and use_vnni arguments. */
static int avx512_bf16_kernel(int exact) { return exact ? FP_BF16_FMA : fp_cpu_bf16_kernel(); }
static int avx512_use_vnni(int exact) { return exact ? 0 : fp_cpu_has_avx512vnni(); }

static void matmul_dispatch(int level, int exact, float *out, const float *inp, const void *w, fp_dtype wt,
                            const float *bias, int T, int K, int N) {
    if (T <= 0 || N <= 0) return;
    if (K <= 0) { /* empty sum: bias only */
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) out[(size_t)t * N + n] = bias ? bias[n] : 0.0f;
        return;
    }
    int max = fp_cpu_max_kernel();
    if (level > max) level = max;
    if (valid_shape(wt, T, K, N)) {
        if (fp_matmul_blas_use(level, wt, T, K, N) && fp_matmul_blas(out, inp, w, bias, T, K, N) == 0) return;
        if (level >= FP_KERN_AVX512 &&
            fp_matmul_avx512(out, inp, w, wt, bias, T, K, N, avx512_bf16_kernel(exact), avx512_use_vnni(exact)) == 0)
            return;
        if (level >= FP_KERN_AVX2 && fp_matmul_avx2(out, inp, w, wt, bias, T, K, N) == 0) return;
    }
    fp_matmul_forward_ref(out, inp, w, wt, bias, T, K, N);
}

void fp_matmul_forward(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                       int T, int K, int N) {
    fp_matmul_forward_level(fp_kernel_level(), out, inp, w, wt, bias, T, K, N);
}

/* ---------------------------------------------------------------- AMX tiles, fused SwiGLU GEMM */
int fp_matmul_amx_ok(int exact, fp_dtype wt, int T, int K) {
    return !exact && T > FP_GEMV_MAX_T && K > 0 && (wt == FP_BF16 || ((wt == FP_Q8_0 || wt == FP_Q4_0) && K % 32 == 0)) &&
           fp_kernel_level() >= FP_KERN_AVX512 && fp_cpu_max_kernel() >= FP_KERN_AVX512 &&
           fp_cpu_bf16_kernel() == FP_BF16_AMX;
}

int fp_matmul_swiglu_fused(int exact, fp_dtype wt, int T, int K, int N) {
    return N > 0 && ((K + 31) & ~31) <= FP_AMX_SWIGLU_MAX_K && fp_matmul_amx_ok(exact, wt, T, K);
}

int fp_matmul_rows_per_weight_pass(int exact, fp_dtype wt) {
    int level = fp_kernel_level(), max = fp_cpu_max_kernel();
    if (level > max) level = max;
    if (level < FP_KERN_AVX2 || (wt == FP_F32 && fp_matmul_blas_mode() != FP_BLAS_OFF)) return 0;
    if (level < FP_KERN_AVX512) return FP_AVX2_ACT_BLOCK_ROWS;
    return fp_matmul_avx512_rows_per_pass(wt, avx512_bf16_kernel(exact), avx512_use_vnni(exact));
}

size_t fp_matmul_tiles_bytes(int T, int N) { return (size_t)((T + 31) & ~31) * (size_t)((N + 31) & ~31) * 2; }

int fp_matmul_swiglu_tiles_ok(int exact, fp_dtype gate_wt, fp_dtype down_wt, int T, int K, int N) {
    return fp_matmul_swiglu_fused(exact, gate_wt, T, K, N) &&
           (down_wt == FP_BF16 || ((down_wt == FP_Q8_0 || down_wt == FP_Q4_0) && N % 32 == 0));
}

/* The SwiGLU pair runs where the GEMMs would run the blocked non-AMX kernels of fp_matmul_avx512 or
 * fp_matmul_avx2 (not OpenBLAS, not AMX, T > FP_GEMV_MAX_T, a shape the kernels take): the same GEMMs, so the
 * same bits, without [T,N] of up.  Returns the level it runs at (0: it does not run). */
static int swiglu_pair_level(int exact, fp_dtype wt, int T, int K, int N) {
    int level = fp_kernel_level(), max = fp_cpu_max_kernel();
    if (level > max) level = max;
    if (level < FP_KERN_AVX2 || !valid_shape(wt, T, K, N) || T <= FP_GEMV_MAX_T || fp_matmul_blas_use(level, wt, T, K, N))
        return 0;
    if (level >= FP_KERN_AVX512 && (fp_matmul_swiglu_fused(exact, wt, T, K, N) ||
                                    (avx512_bf16_kernel(exact) == FP_BF16_AMX &&
                                     (wt == FP_BF16 || wt == FP_Q8_0 || wt == FP_Q4_0))))
        return 0;
    return level;
}

int fp_matmul_swiglu_needs_up(int exact, fp_dtype wt, int T, int K, int N) {
    return !fp_matmul_swiglu_fused(exact, wt, T, K, N) && !swiglu_pair_level(exact, wt, T, K, N);
}

int fp_matmul_swiglu_forward_buf(int exact, float *out, const float *inp, const void *wg, const void *wu,
                                 fp_dtype wt, int T, int K, int N, float *up) {
    if (T <= 0 || N <= 0) return 0;
    if (fp_matmul_swiglu_fused(exact, wt, T, K, N) && fp_matmul_avx512_swiglu(out, inp, wg, wu, wt, T, K, N) == 0)
        return 0;
    int pair = swiglu_pair_level(exact, wt, T, K, N);
    if (pair) {
        int rc = pair >= FP_KERN_AVX512 ? fp_matmul_avx512_swiglu_pair(out, inp, wg, wu, wt, T, K, N,
                                                                       avx512_bf16_kernel(exact),
                                                                       avx512_use_vnni(exact), exact)
                                        : fp_matmul_avx2_swiglu_pair(out, inp, wg, wu, wt, T, K, N);
        if (rc <= 0) return rc;
    }
    /* unfused: exactly what the model ran before the fused kernel (gate in place, then SwiGLU over it) */
    float *u = up ? up : malloc(sizeof(float) * (size_t)T * (size_t)N);
    if (!u) return -1;
    fp_matmul_forward_ex(exact, out, inp, wg, wt, NULL, T, K, N);
    fp_matmul_forward_ex(exact, u, inp, wu, wt, NULL, T, K, N);
    if (exact) fp_swiglu_forward(out, out, u, T, N);
    else fp_swiglu_forward_fast(out, out, u, T, N); /* the fused kernel's SwiGLU */
    if (!up) free(u);
    return 0;
}

int fp_matmul_swiglu_forward_ex(int exact, float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt,
                                int T, int K, int N) {
    return fp_matmul_swiglu_forward_buf(exact, out, inp, wg, wu, wt, T, K, N, NULL);
}

const char *fp_matmul_kernel_name_level(int level, fp_dtype wt) {
    int max = fp_cpu_max_kernel();
    if (level > max) level = max;
    if (level >= FP_KERN_AVX512) return fp_matmul_avx512_name(wt, fp_cpu_bf16_kernel(), fp_cpu_has_avx512vnni());
    if (level >= FP_KERN_AVX2) return "avx2-f32fma";
    return "ref";
}

const char *fp_matmul_kernel_name_shape(int level, fp_dtype wt, int T) {
    int max = fp_cpu_max_kernel();
    if (level > max) level = max;
    if (level >= FP_KERN_AVX512 && T <= FP_GEMV_MAX_T) return "avx512-gemv";
    if (level >= FP_KERN_AVX2 && T <= FP_GEMV_MAX_T) return "avx2-gemv";
    return fp_matmul_kernel_name_level(level, wt);
}

const char *fp_matmul_kernel_name_gemm(int level, fp_dtype wt, int T, int K, int N) {
    if (fp_matmul_blas_use(level, wt, T, K, N)) return "openblas-sgemm";
    return fp_matmul_kernel_name_shape(level, wt, T);
}

const char *fp_matmul_kernel_name(fp_dtype wt) {
    return fp_matmul_kernel_name_level(fp_kernel_level(), wt);
}
