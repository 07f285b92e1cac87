/* The training GEMM kernels built with AVX2 code generation (see gemm_impl.h); only called when the CPU
 * supports it (fpt_linear_* in ops.c dispatch on fp_kernel_level()). */
#include "train/train.h"
#define FPT_GEMM_NAME(f) f##_avx2
void fpt_linear_forward_avx2(float *out, const float *inp, const float *w, const float *b, int T, int K, int N);
void fpt_linear_backward_avx2(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                              const float *w, int T, int K, int N);
#include "train/gemm_impl.h"
