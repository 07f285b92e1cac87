/* Matrix multiply out[T,N] = inp[T,K] @ W[N,K]^T + bias: reference kernel and dispatch. */
#include "tensor/tensor.h"
#include <stdlib.h>

/* Reference: one weight row converted to f32 at a time; f32 accumulation. */
void fp_matmul_forward_ref(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                           int T, int K, int N) {
    size_t row_bytes = fp_dtype_row_bytes(wt, K);
#pragma omp parallel
    {
        float *wrow = malloc(sizeof(float) * (size_t)K);
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
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

void fp_matmul_forward(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                       int T, int K, int N) {
    fp_matmul_forward_ref(out, inp, w, wt, bias, T, K, N);
}
