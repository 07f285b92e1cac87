/* Several GEMMs over the same activations (the q, k, v projections): dispatch of fp_matmul_forward_multi. */
#include "tensor/kernels.h"
#include "tensor/tensor.h"

void fp_matmul_forward_multi(int exact, int nseg, float *const out[], const void *const w[],
                             const float *const bias[], const int N[], fp_dtype wt, const float *inp, int T, int K) {
    /* one pass on AMX (fast precision only: exact keeps f32 activations, which AMX does not) */
    if (!exact && fp_kernel_level() >= FP_KERN_AVX512 && fp_cpu_max_kernel() >= FP_KERN_AVX512 &&
        fp_cpu_bf16_kernel() == FP_BF16_AMX && fp_matmul_avx512_multi(nseg, out, w, bias, N, wt, inp, NULL, T, K) == 0)
        return;
    /* otherwise, and if the one-pass kernel had no scratch memory (a GEMM per segment needs less): one GEMM each */
    for (int s = 0; s < nseg; s++) fp_matmul_forward_ex(exact, out[s], inp, w[s], wt, bias ? bias[s] : NULL, T, K, N[s]);
}
