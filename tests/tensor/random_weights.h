/* Random weight matrices for the GEMM tests (tests/tensor/test_matmul.c, test_swiglu_gemm.c). */
#ifndef FP_TEST_RANDOM_WEIGHTS_H
#define FP_TEST_RANDOM_WEIGHTS_H
#include "tensor/tensor.h"
#include "test_rand.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Random weights [N][K] in dtype wt, values ~ U(-0.5, 0.5) (row n times scale[n] when scale != NULL; the scale
 * applies to F32/F16/BF16); Q8_0/Q4_0 blocks get random quants and f16 scales of +-0.001..0.021.  Their exact
 * f32 values go to wf[N][K]. */
static void *make_weights(fp_dtype wt, int N, int K, const float *scale, float *wf) {
    size_t rb = fp_dtype_row_bytes(wt, K);
    uint8_t *w = malloc(rb * (size_t)N);
    for (int n = 0; n < N; n++) {
        uint8_t *row = w + rb * (size_t)n;
        for (int k = 0; k < K; k++) {
            float v = frand() * 0.5f * (scale ? scale[n] : 1.0f);
            if (wt == FP_F32) memcpy(row + 4 * (size_t)k, &v, 4);
            else if (wt == FP_F16) { uint16_t h = fp_f32_to_f16(v); memcpy(row + 2 * (size_t)k, &h, 2); }
            else if (wt == FP_BF16) { uint16_t h = fp_f32_to_bf16(v); memcpy(row + 2 * (size_t)k, &h, 2); }
        }
        if (wt == FP_Q8_0 || wt == FP_Q4_0) {
            size_t bs = wt == FP_Q8_0 ? 34 : 18;
            for (int b = 0; b < K / 32; b++) {
                uint8_t *blk = row + bs * (size_t)b;
                uint16_t d = fp_f32_to_f16(0.001f + 0.02f * (float)(rnd() % 1000) / 1000.0f * (rnd() & 1 ? 1 : -1));
                memcpy(blk, &d, 2);
                for (size_t j = 2; j < bs; j++) blk[j] = (uint8_t)rnd();
            }
        }
        fp_row_to_f32(wf + (size_t)n * K, row, wt, K);
    }
    return w;
}
/* The VNNI path's activation quantisation (matmul_avx512.c act_to_q8), emulated for the GEMM oracles: one
 * block of 32 values -> q[32] the int8 values (as floats, symmetric, |q| <= 127, round to nearest even),
 * returns the block scale d = amax / 127 (the value is q * d). */
static inline float emulate_q8_block(const float *r, float *q) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(r[j]));
    float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < 32; j++) {
        float v = nearbyintf(r[j] * id);
        q[j] = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
    }
    return d;
}

#endif
