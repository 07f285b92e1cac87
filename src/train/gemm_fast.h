/* Internal to src/train: the blocked, packed AVX-512 f32 GEMM behind fpt_linear_* and the attention ops at the
 * avx512 kernel level (gemm_fast_avx512.c; only called when fp_kernel_level() >= FP_KERN_AVX512).
 *
 *   C[M,N] (+)= alpha * A[M,K] B[K,N]   with A(i,k) = A[i*a_r + k*a_k],  B(k,j) = B[k*b_k + j*b_c]
 *
 * so one kernel serves the three training layouts through strides: forward y = x W^T (B transposed, b_k = 1),
 * dX = dY W (plain), dW += dY^T X (A transposed, a_r = 1).  f32 products and f32 sums (FMA); only the order of
 * the sums differs from the plain loops.  accumulate = 0 overwrites C with alpha*AB (+ bias[j] when bias is not
 * NULL); accumulate = 1 adds alpha*AB to C (bias ignored). */
#ifndef FPT_GEMM_FAST_H
#define FPT_GEMM_FAST_H
#include <stddef.h>

typedef struct {
    const float *A;
    ptrdiff_t a_r, a_k;
    const float *B;
    ptrdiff_t b_k, b_c;
    float *C;
    ptrdiff_t ldc;
    const float *bias;
    int M, N, K;
    int accumulate;
    float alpha;
} fpt_gemm_args;

/* Multi-threaded (OpenMP, when the work is large enough). */
void fpt_gemm_avx512(const fpt_gemm_args *g);
/* Single-threaded (for use inside a parallel region). */
void fpt_gemm_avx512_st(const fpt_gemm_args *g);

/* The ops of train.h at the avx512 level, built on the kernel above. */
void fpt_linear_forward_fast(float *out, const float *inp, const float *w, const float *b, int T, int K, int N);
void fpt_linear_backward_fast(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                              const float *w, int T, int K, int N);
void fpt_attention_forward_fast(float *out, float *att, const float *q, const float *k, const float *v,
                                int T, int NH, int NKV, int D);
void fpt_attention_backward_fast(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                 const float *att, const float *q, const float *k, const float *v,
                                 int T, int NH, int NKV, int D);
#endif
